"""The generation commands: the Fréchet distance between two stores, FID and its companions
between samples and real images, and the table of sample sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from extract.store.cli_options import STORE, invocation, user_errors


@click.command()
@click.option(
    "--real",
    required=True,
    type=STORE,
    help="the reference store (e.g. real images' features)",
)
@click.option(
    "--fake",
    required=True,
    type=STORE,
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
    help="go on, with a warning, when the two stores hold the same images (by pixel digest) "
    "[default: refuse]",
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


@click.command("fid")
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
    help="with classifier:FILE features and --data: each side's share of every class by the "
    "classifier's argmax, and their total variation distance",
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


@click.command("gen-table")
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
