"""`analysis cka` and its benchmark, `analysis bench`: CKA maps between stores' features."""

from __future__ import annotations

import json
from pathlib import Path

import click

from analysis.align_config import METRICS, AlignConfig
from analysis.cka_config import ESTIMATORS, KERNELS, LINEAR_PATHS, CkaConfig
from extract.store.cli_options import STORE, invocation, key_options, user_errors

DEFAULTS = CkaConfig(Path("."))
ALIGN_DEFAULTS = AlignConfig(".", ".")


def map_options(stores: str, title: str, keys: str):
    """--store (repeatable), --labels, --out, --title and the key filters of a map between stores."""

    def decorate(fn):
        for option in reversed(
            [
                click.option("--store", "stores", multiple=True, required=True, type=STORE, help=stores),
                click.option("--labels", default="A,B", help="names of the two stores in the figure"),
                click.option(
                    "--out",
                    required=True,
                    type=click.Path(path_type=Path),
                    help="figure (.png; .svg and .json beside it)",
                ),
                click.option("--title", default=title),
                key_options(what=keys),
            ]
        ):
            fn = option(fn)
        return fn

    return decorate


@click.command()
@map_options(
    "one store (layer x layer) or two (A x B); folders or URLs",
    "linear CKA",
    "keys to compare [default: every key in the store]",
)
@click.option(
    "--kernel",
    type=click.Choice(KERNELS),
    default=DEFAULTS.kernel,
    help="linear: exact, streamed; rbf: bandwidth x median distance (<= --max-rows images); "
    "minibatch: unbiased HSIC over minibatches",
)
@click.option(
    "--estimator",
    type=click.Choice(ESTIMATORS),
    default=None,
    help="linear and rbf: HSIC's biased estimator (Kornblith et al.; inflated where the width far exceeds "
    "the number of images) or the unbiased one (Song et al.) [default: biased; minibatch: unbiased]",
)
@click.option(
    "--max-memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULTS.max_bytes / 2**30,
    show_default=True,
    help="linear: most memory its arrays may take. It takes the first exact path that fits: feature "
    "moments (16 D^2 bytes for D features over all keys), one centred Gram matrix per key (8 n^2 bytes "
    "each for n images, plus one key's rows as stored), one pair of keys at a time, or tiles of the Gram "
    "matrices (two tiles of rows of every key in float64 and one n_tile^2 block per key, the tile as "
    "tall as the cap allows: any width, any n); a request that fits none is refused",
)
@click.option(
    "--linear-path",
    type=click.Choice(LINEAR_PATHS),
    default=DEFAULTS.linear_path,
    show_default=True,
    help="linear: force one path (they agree to rounding); auto picks by size",
)
@click.option(
    "--device",
    default=DEFAULTS.device,
    show_default=True,
    help="linear: cuda, cuda:1, ... runs the tiles path there (float64 torch)",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=4),
    default=DEFAULTS.max_rows,
    help="rbf: most images (n x n kernels)",
)
@click.option(
    "--batch", type=click.IntRange(min=4), default=DEFAULTS.batch, help="minibatch: rows per minibatch"
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULTS.seed,
    show_default=True,
    help="minibatch: the seeded row order (batches mix classes on class-sorted stores)",
)
@click.option("--progress/--no-progress", default=DEFAULTS.progress)
@user_errors
def cka(stores, labels, out, title, blocks, max_memory_gb, estimator, **options):
    """Linear CKA between every cached (t, b, pool) of one store, or of two stores on the same images."""
    from analysis.compare import cka_map, write_cka_map

    if len(stores) > 2:
        raise ValueError("give one or two --store")
    cfg = CkaConfig(
        stores[0],
        stores[1] if len(stores) == 2 else None,
        tuple((labels.split(",") + ["A", "B"])[:2]),
        bs=() if "all" in blocks else blocks,
        max_bytes=int(max_memory_gb * 2**30),
        estimator=estimator or "",
        **options,
    )
    result = cka_map(cfg)
    write_cka_map(result, cfg, out, title, invocation())
    how = f", by {result.method}" if result.method else ""
    shape = f"{len(result.rows)} x {len(result.cols)} {result.kernel} CKA ({result.estimator})"
    click.echo(f"written: {out} ({shape} over {result.n} images{how})")


@click.command()
@map_options(
    "two stores: A (every key) and B; folders or URLs",
    "alignment",
    "A's keys to align [default: every key in A]",
)
@click.option(
    "--against", default="", show_default=False, help="B's key, e.g. t0/b5/full [default: B's only key]"
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    type=click.Choice(METRICS),
    default=METRICS,
    help="repeatable: mutual kNN, CKNNA (unbiased HSIC over shared neighbours), unbiased linear CKA",
)
@click.option("--k", type=click.IntRange(min=1), default=ALIGN_DEFAULTS.k, help="neighbours per image")
@click.option(
    "--max-memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=ALIGN_DEFAULTS.max_bytes / 2**30,
    help="most memory the neighbour tiles and CKA's arrays may take",
)
@click.option("--progress/--no-progress", default=ALIGN_DEFAULTS.progress)
@user_errors
def align(stores, labels, out, title, ts, blocks, pools, against, metrics, k, max_memory_gb, progress):
    """How every cached (t, b) of store A aligns with one key of store B, over the images both
    hold (paired by pixel digest), rows L2-normalised: mutual kNN, CKNNA and unbiased CKA."""
    from analysis.align import align_map, write_align_map

    if len(stores) != 2:
        raise ValueError("give two --store: A (its keys form the map) and B (one key of it)")
    cfg = AlignConfig(
        stores[0],
        stores[1],
        tuple((labels.split(",") + ["A", "B"])[:2]),
        ts,
        () if "all" in blocks else blocks,
        pools,
        against,
        tuple(metrics),
        k,
        int(max_memory_gb * 2**30),
        progress=progress,
    )
    result = align_map(cfg)
    write_align_map(result, out, title, invocation())
    for metric, best in result.best().items():
        click.echo(f"{metric}: best {best['key']} = {best['value']:.4f}")
    click.echo(f"written: {out} ({len(result.rows)} keys of A against B {result.against}, {result.n} images)")


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/cka.json"))
@click.option("--sizes", default="2000,10000,50000", help="numbers of images")
@click.option(
    "--store",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="full maps: a real store holding --keys",
)
@click.option(
    "--keys", default="t10/b9/full,t10/b30/full", show_default=True, help="full maps: the store's two keys"
)
@click.option(
    "--imagenet-rows",
    type=click.IntRange(min=16),
    default=1000,
    show_default=True,
    help="full maps: images of the synthetic b=24 case",
)
@click.option(
    "--max-memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="full maps: the paths' cap",
)
@click.option("--device", default="cpu", show_default=True, help="full maps: the tiles path's device")
@click.option("--full-maps/--no-full-maps", default=True, show_default=True)
@user_errors
def bench(out, sizes, store, keys, imagenet_rows, max_memory_gb, device, full_maps):
    """Streamed linear CKA vs the Gram-matrix version against n; then full feature maps through
    each exact path (moments, gram, tiles): time, peak memory, agreement."""
    from analysis.bench import bench_cka, bench_full_maps, format_full_maps, format_table

    rows = bench_cka(_ints(sizes))
    click.echo(format_table(rows))
    result = {"moments_vs_gram": rows}
    if full_maps:
        result["full_maps"] = bench_full_maps(
            store, tuple(keys.split(",")), imagenet_rows, max_memory_gb, device
        )
        click.echo(format_full_maps(result["full_maps"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    click.echo(f"written: {out}")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected a comma list of integers, got {text!r}") from None
