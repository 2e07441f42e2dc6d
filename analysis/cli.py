"""`python -m analysis`: thin click commands over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from extract.store.cli_options import invocation, key_options, user_errors
from extract.store.config_files import add_config_option

CKA_MAX_MEMORY_GB = 2.0  # analysis.linear_paths.DEFAULT_MAX_BYTES, kept here so --help loads no numpy code


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """diffprobe analysis: plots from probe results."""


@cli.command()
@click.option(
    "--results",
    "runs",
    multiple=True,
    help="LABEL=results.json of a probe run (repeat; a repeated LABEL pools its runs)",
)
@click.option(
    "--table",
    type=click.Path(path_type=Path),
    help="a probe_results.csv: one point per run, a line per model and weights",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="figure path (.png; an .svg is written beside it)",
)
@click.option("--title", default="linear probe accuracy")
@user_errors
def curves(runs, table, out, title):
    """Accuracy vs t, b and pool: the validation-best member (or run) per value, its test accuracy."""
    from analysis.curves import members_from_table, plot_curves
    from probe.tables import read_results, read_table

    if bool(runs) == bool(table):
        raise ValueError("give either --results LABEL=FILE (repeatable) or --table FILE")
    members, sources = {}, {}
    if table:
        if not table.is_file():
            raise FileNotFoundError(f"results table not found: {table}")
        members = members_from_table(read_table(table))
        sources = {"table": [str(table)]}
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected LABEL=PATH")
        result = read_results(path)
        members.setdefault(label, []).extend(result["members"])
        sources.setdefault(label, []).append(Path(result["stores"]["train"]["path"]).name)
    fig = plot_curves(
        members, title, "\n".join(f"{label}: {', '.join(names)}" for label, names in sources.items())
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    click.echo(f"written: {out} and {out.with_suffix('.svg')}")


@cli.command()
@click.option(
    "--results",
    "runs",
    multiple=True,
    required=True,
    help="LABEL=results.json of a probe run (repeat, or a glob; a repeated LABEL pools its runs)",
)
@click.option(
    "--by",
    "axis",
    type=click.Choice(["t", "b", "pool"]),
    default="pool",
    help="one row per value of this axis",
)
@click.option(
    "--csv",
    "csv_out",
    type=click.Path(path_type=Path),
    help="also write every member (validation and test top-1) as CSV",
)
@user_errors
def best(runs, axis, csv_out):
    """The validation-best member for each value of t, b or pool (test only reported)."""
    import csv

    from analysis.curves import best_table, member_row

    members = _members(runs)
    rows = best_table(members, axis)
    click.echo(f"{'run':<16} {axis:>5}  {'features':<24} {'lr':>7} {'val top-1':>9} {'test top-1':>10}")
    for r in rows:
        click.echo(
            f"{r['run']:<16} {str(r['value']):>5}  {r['features']:<24} {r['lr']!s:>7} {r['val_top1']:>9.2f} {r['test_top1']:>10.2f}"
        )
    if csv_out:
        every = [member_row(label, m) for label, ms in members.items() for m in ms]
        csv_out.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(every[0]))
            writer.writeheader()
            writer.writerows(every)
        click.echo(f"written: {csv_out} ({len(every)} members)")


def _members(runs) -> dict[str, list[dict]]:
    from analysis.intervals import expand
    from probe.tables import read_results

    members: dict[str, list[dict]] = {}
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected LABEL=PATH")
        for one in expand([path]):  # a glob pools every run it matches
            members.setdefault(label, []).extend(read_results(one)["members"])
    return members


@cli.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="one store (layer x layer) or two (A x B)",
)
@click.option("--labels", default="A,B", help="names of the two stores in the figure")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="figure (.png; .svg and .json beside it)"
)
@click.option("--title", default="linear CKA")
@key_options(what="keys to compare [default: every key in the store]")
@click.option(
    "--kernel",
    type=click.Choice(["linear", "rbf", "minibatch"]),
    default="linear",
    help="linear: exact, streamed; rbf: bandwidth x median distance (<= --max-rows images); minibatch: unbiased HSIC over minibatches",
)
@click.option(
    "--max-memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=CKA_MAX_MEMORY_GB,
    show_default=True,
    help="linear: most memory its arrays may take. It takes the first exact path that fits: feature moments "
    "(16 D^2 bytes for D features over all keys), one centred Gram matrix per key (8 n^2 bytes each for n images, "
    "plus one key's rows as stored), one pair of keys at a time, or tiles of the Gram matrices (two tiles of rows of "
    "every key in float64 and one n_tile^2 block per key, the tile as tall as the cap allows: any width, any n); "
    "a request that fits none is refused",
)
@click.option(
    "--linear-path",
    type=click.Choice(["auto", "moments", "gram", "pairwise", "tiles"]),
    default="auto",
    show_default=True,
    help="linear: force one path (they agree to rounding); auto picks by size",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="linear: cuda, cuda:1, ... runs the tiles path there (float64 torch)",
)
@click.option("--max-rows", type=click.IntRange(min=4), default=5000, help="rbf: most images (n x n kernels)")
@click.option("--batch", type=click.IntRange(min=4), default=256, help="minibatch: rows per minibatch")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="minibatch: the seeded row order (batches mix classes on class-sorted stores)",
)
@click.option("--progress/--no-progress", default=True)
@user_errors
def cka(
    stores,
    labels,
    out,
    title,
    ts,
    blocks,
    pools,
    kernel,
    max_memory_gb,
    linear_path,
    device,
    max_rows,
    batch,
    seed,
    progress,
):
    """Linear CKA between every cached (t, b, pool) of one store, or of two stores on the same images."""
    from analysis.compare import cka_map, plot_cka

    if len(stores) > 2:
        raise ValueError("give one or two --store")
    names = tuple((labels.split(",") + ["A", "B"])[:2])
    if "all" in blocks:
        blocks = ()
    filters = dict(ts=ts, bs=blocks, pools=pools)
    result = cka_map(
        stores[0],
        stores[1] if len(stores) == 2 else None,
        names,
        kernel=kernel,
        max_rows=max_rows,
        batch=batch,
        seed=seed,
        max_bytes=int(max_memory_gb * 2**30),
        linear_path=linear_path,
        device=device,
        progress=progress,
        **filters,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_cka(result, title)
    fig.savefig(out, dpi=130)
    fig.savefig(out.with_suffix(".svg"))
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "rows": result.rows,
                "cols": result.cols,
                "cka": result.matrix.round(6).tolist(),
                "images": result.n,
                "kernel": result.kernel,
                "sources": result.sources,
                **({"batch": batch, "seed": seed} if kernel == "minibatch" else {}),
                **({"path": result.method} if result.method else {}),
                "invocation": invocation(),
            },
            indent=1,
        )
        + "\n"
    )
    how = f", by {result.method}" if result.method else ""
    click.echo(
        f"written: {out} ({len(result.rows)} x {len(result.cols)} {result.kernel} CKA over {result.n} images{how})"
    )


@cli.command()
@click.option(
    "--real",
    required=True,
    type=click.Path(path_type=Path),
    help="the reference store (e.g. real images' features)",
)
@click.option(
    "--fake",
    required=True,
    type=click.Path(path_type=Path),
    help="the store compared to it (e.g. samples' features)",
)
@click.option(
    "--key", "key_label", help="the feature key, e.g. t0/b4/p1 [default: the one key both stores hold]"
)
@click.option("--k", type=click.IntRange(min=1), default=3, help="neighbours for precision and recall")
@click.option(
    "--pr-rows",
    type=click.IntRange(min=4),
    default=5000,
    help="rows of each store sampled for precision and recall",
)
@click.option(
    "--allow-overlap",
    is_flag=True,
    help="go on, with a warning, when the two stores hold the same images (by pixel digest) [default: refuse]",
)
@click.option("--out", type=click.Path(path_type=Path), help="also write the result as JSON")
@user_errors
def fd(real, fake, key_label, k, pr_rows, allow_overlap, out):
    """Fréchet distance, precision and recall between two stores' features at one key."""
    import dataclasses

    from analysis.distance import store_distance
    from extract.store.schema import FeatureKey

    result = store_distance(
        real,
        fake,
        FeatureKey.parse(key_label) if key_label else None,
        k=k,
        pr_rows=pr_rows,
        allow_overlap=allow_overlap,
    )
    click.echo(result.line())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({**dataclasses.asdict(result), "invocation": invocation()}, indent=1) + "\n"
        )


@cli.command("fid")
@click.option(
    "--fake",
    type=click.Path(path_type=Path),
    help="samples: an `extract sample` folder, a folder of PNGs, or a .npz (arr_0, uint8 NHWC)",
)
@click.option(
    "--real",
    type=click.Path(path_type=Path),
    help="reference: statistics .npz (mu, sigma) or images .npz (arr_0); or use --data",
)
@click.option(
    "--data",
    help="real images from this dataset (`python -m extract datasets`), read as extraction reads them",
)
@click.option("--data-root", type=click.Path(path_type=Path), help="dataset location")
@click.option("--split", default="test", help="dataset split")
@click.option("--data-opt", "data_opts", multiple=True, help="dataset option key=value")
@click.option("--limit", type=click.IntRange(min=2), help="a seeded random subset of the split")
@click.option(
    "--split-half/--no-split-half",
    default=False,
    help="the split-half baseline: the split's two seeded halves against each other (no --fake)",
)
@click.option("--image-size", type=click.IntRange(min=1), help="real images' size [default: the samples']")
@click.option(
    "--channels", type=click.Choice(["1", "3"]), help="real images' channels [default: the samples']"
)
@click.option(
    "--features",
    default="inception",
    show_default=True,
    help="inception | classifier:FILE | torchvision:resnet50 | torchvision:vit_b_16 | pixels",
)
@click.option(
    "--inception-weights",
    type=click.Path(path_type=Path),
    help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (never downloaded)",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="a torchvision state_dict, for --features torchvision:*",
)
@click.option(
    "--random-init/--no-random-init",
    default=False,
    help="random feature weights: a pipeline check, not an FID",
)
@click.option("--k", type=click.IntRange(min=1), default=3, help="neighbours for precision and recall")
@click.option(
    "--pr-rows",
    type=click.IntRange(min=4),
    default=5000,
    help="feature rows of each side sampled for precision and recall",
)
@click.option(
    "--kid-subsets",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="kernel distance (KID): random subsets ...",
)
@click.option(
    "--kid-subset-size",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="... of this many rows of each side (fewer if a side has fewer)",
)
@click.option(
    "--inception-score/--no-inception-score",
    default=True,
    show_default=True,
    help="with Inception features: the samples' Inception Score (a second Inception pass, over their logits)",
)
@click.option(
    "--class-balance/--no-class-balance",
    default=True,
    show_default=True,
    help="with classifier:FILE features and --data: each side's share of every class by the classifier's argmax, and their total variation distance",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=100)
@click.option("--seed", type=int, default=0, help="seeds --limit, --split-half and the precision/recall rows")
@click.option("--device", default="cpu")
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=Path("cache/fid"),
    help="folder of the feature stores of each side (reused while their arguments hold)",
)
@click.option(
    "--save-stats",
    type=click.Path(path_type=Path),
    help="also write the real side's statistics (mu, sigma) here",
)
@click.option("--out", type=click.Path(path_type=Path), help="also write the result as JSON")
@click.option("--progress/--no-progress", default=True)
@user_errors
def fid_cmd(data, data_root, split, data_opts, limit, channels, out, **options):
    """FID (Inception-v3 via torch-fidelity) or the Fréchet distance in another feature space, with
    precision and recall, KID (the kernel distance) and, with Inception, the samples' Inception
    Score, between samples and real images or reference statistics: `extract
    features` writes each side's store (in a child process), then the distance reads them."""
    from analysis.fid import DataSpec, FidConfig, StepFailed, fid

    selection = DataSpec(data, split, data_root, tuple(data_opts), limit) if data else None
    try:
        result = fid(FidConfig(data=selection, channels=int(channels) if channels else None, **options))
    except StepFailed as failed:
        sys.exit(failed.returncode)  # the step printed its own one-line error
    click.echo(result.line())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({**result.to_dict(), "invocation": invocation()}, indent=1, default=str) + "\n"
        )


@cli.command("gen-table")
@click.option(
    "--fd", "results", multiple=True, required=True, help="LABEL=fid.json written by `fid --out` (repeat)"
)
@click.option(
    "--probe-table",
    type=click.Path(path_type=Path),
    help="a probe_results.csv: the validation-best probe of the same model and weights goes beside each FD",
)
@click.option(
    "--feature-net",
    type=click.Path(path_type=Path),
    help="the feature classifier's training record (.json), for its test accuracy",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="table as JSON (a .csv is written beside it)",
)
@user_errors
def gen_table(results, probe_table, feature_net, out):
    """One table of sample sets: FD, precision, recall, and the probe accuracy of the same weights."""
    from analysis.gentable import generation_rows, markdown, write_table

    pairs = []
    for item in results:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--fd {item!r}: expected LABEL=PATH")
        pairs.append((label, path))
    rows = generation_rows(pairs, probe_table, feature_net)
    click.echo("\n".join(markdown(rows)))
    click.echo(f"written: {', '.join(map(str, write_table(rows, out)))}")


@cli.command()
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


@cli.command()
@click.option(
    "--a",
    "a_files",
    multiple=True,
    required=True,
    help="results JSON of side A (comma list, repeat or glob; several runs are seeds)",
)
@click.option("--b", "b_files", multiple=True, required=True, help="results JSON of side B, the same way")
@click.option(
    "--resamples",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="bootstrap resamples of the test rows",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seeds the resampling")
@click.option("--out", type=click.Path(path_type=Path), help="also write the result as JSON")
@user_errors
def diff(a_files, b_files, resamples, seed, out):
    """A's test top-1 minus B's, in points, with a 95% paired-bootstrap interval over the shared test rows (each run's NAME.predictions.npz)."""
    from analysis.intervals import compare

    result = compare(a_files, b_files, resamples, seed)
    click.echo(result.line())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**result.to_dict(), "invocation": invocation()}, indent=1) + "\n")


@cli.command("table")
@click.option(
    "--row",
    "rows",
    multiple=True,
    help="LABEL=PATTERN: a row, its results files per head with {head} in the pattern (several files: seeds)",
)
@click.option(
    "--rows-from",
    help="PATTERN with {row} and {head}: a row for every text {row} stands for in an existing file (after the --row rows)",
)
@click.option(
    "--fd-from", help="PATTERN with {row}: each row's Fréchet distance result, where the file exists"
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    help="also draw each head's top-1 (and FD) over the rows, in their order (.png, .svg beside it)",
)
@click.option("--title", default="", help="the plot's title")
@click.option(
    "--head",
    "heads",
    multiple=True,
    default=("linear",),
    show_default=True,
    help="heads: the table's columns (repeat or comma list)",
)
@click.option(
    "--ref",
    "reference",
    help="the row every other row is compared with, per head, with a paired-bootstrap interval",
)
@click.option(
    "--fd",
    "generation",
    multiple=True,
    help="LABEL=FILE: a row's Fréchet distance result (analysis fid or fd JSON)",
)
@click.option("--resamples", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="seeds the resampling")
@click.option(
    "--out", type=click.Path(path_type=Path), help="also write the table as Markdown (and JSON beside it)"
)
@user_errors
def table_cmd(rows, rows_from, fd_from, plot, title, heads, reference, generation, resamples, seed, out):
    """Rows x heads of test top-1 over seeds (mean, spread, runs), FD where given, and each row minus the reference row with 95% intervals."""
    from analysis.seed_table import build_table, generation_from, markdown, parse_rows
    from analysis.seed_table import plot as plot_table
    from analysis.seed_table import rows_from as find_rows

    heads = [h for item in heads for h in item.split(",") if h]
    pairs = (parse_rows(rows) if rows else []) + (find_rows(rows_from, heads) if rows_from else [])
    if not pairs:
        raise ValueError(
            "give --row LABEL=PATTERN or --rows-from PATTERN"
            + (" (it found no results file)" if rows_from else "")
        )
    if fd_from:
        generation = (*generation, *generation_from(fd_from, [label for label, _ in pairs]))
    table = build_table(pairs, heads, reference, generation, resamples, seed)
    text = markdown(table)
    click.echo(text, nl=False)
    if plot:
        plot_table(table, plot, title)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(
            json.dumps({**table.to_dict(), "invocation": invocation()}, indent=1) + "\n"
        )


@cli.command()
@click.option(
    "--results",
    "results",
    multiple=True,
    type=click.Path(path_type=Path),
    default=(Path("results"),),
    show_default=True,
    help="folders searched (recursively) for probe results tables",
)
@click.option(
    "--cka",
    "cka_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    default=(Path("results/cka"),),
    show_default=True,
    help="folders of CKA maps (PNG + JSON)",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--title", default="diffprobe report", show_default=True)
@click.option(
    "--generation",
    type=click.Path(path_type=Path),
    default=Path("results/gen/generation.json"),
    show_default=True,
    help="a generation table (`gen-table --out`), included when it exists",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="bootstrap resamples for the Differences section",
)
@user_errors
def report(results, cka_dirs, out, title, generation, resamples):
    """One report from whatever results exist: Markdown, and one self-contained HTML page (accuracy with intervals and provenance, differences
    between runs with paired-bootstrap intervals, curves, CKA, generation)."""
    from analysis.report import build_report

    md, page, missing = build_report(
        list(results), list(cka_dirs), out, title, generation=generation, resamples=resamples
    )
    for line in missing:
        click.echo(f"not in the report: {line}")
    click.echo(f"written: {md}, {page}")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected a comma list of integers, got {text!r}") from None


add_config_option(cli)  # every command takes --config FILE


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="python -m analysis")
