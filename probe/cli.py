"""`python -m probe`: thin click commands over the library."""

from __future__ import annotations

from pathlib import Path

import click

from extract.store.cli_options import STORE, float_list, int_list, key_options, user_errors
from extract.store.config_files import add_config_option
from probe.cli_finetune import finetune
from probe.config import BASELINE_NAMES, HEAD_NAMES, OPTIMIZER_NAMES, SCHEDULE_NAMES
from probe.recipes import RECIPES, probe_config
from probe.tables import summary_lines

# torch and the training code load only inside the commands that train, so `--help` and
# `table` start at once


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """diffprobe probe: train classification heads on cached features, evaluate saved heads."""


@cli.command()
@click.option(
    "--train", "train_store", required=True, type=STORE, help="training store (.zarr folder or URL)"
)
@click.option(
    "--test",
    "test_store",
    type=STORE,
    help="test store: evaluated only, never used to choose",
)
@click.option(
    "--val",
    "val_store",
    type=STORE,
    help="official validation store [default: carved from --train]",
)
@click.option(
    "--head",
    "heads",
    multiple=True,
    default=("linear",),
    type=click.Choice([*HEAD_NAMES, *BASELINE_NAMES]),
    help="heads (repeat for a grid)",
)
@click.option(
    "--head-opt",
    "head_options",
    multiple=True,
    help="NAME=VALUE head option, e.g. width=256, hidden=512,512, batchnorm=true",
)
@click.option(
    "--features",
    multiple=True,
    help="feature set t150/b24/p2 (or t150/b24/full), '+' to concatenate, 'all' for every key of the "
    "store together (repeat for a grid) [default: each key alone]",
)
@click.option(
    "--features-from",
    type=click.Path(path_type=Path),
    help="a probe results file: train at the feature set it chose on validation (e.g. an attention head "
    "where a linear grid chose)",
)
@key_options(what="store's keys to train on, each alone [default: all]")
@click.option(
    "--recipe",
    type=click.Choice(list(RECIPES)),
    default="diffprobe",
    help="defaults for the options marked 'the recipe's' (see README: recipes)",
)
@click.option(
    "--lr",
    "lrs",
    multiple=True,
    callback=float_list,
    help="learning rates (grid) [default: the recipe's, per head]",
)
@click.option(
    "--wd", "wds", multiple=True, callback=float_list, help="weight decays (grid) [default: the recipe's]"
)
@click.option("--epochs", type=click.IntRange(min=1), help="[default: the recipe's]")
@click.option("--batch-size", type=click.IntRange(min=1), help="global batch [default: the recipe's]")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZER_NAMES)), help="[default: the recipe's]")
@click.option("--momentum", type=float, help="SGD momentum [default: the recipe's]")
@click.option("--schedule", type=click.Choice(list(SCHEDULE_NAMES)), help="[default: the recipe's]")
@click.option("--warmup-epochs", type=float, default=0.0)
@click.option(
    "--step-epochs",
    type=click.IntRange(min=1),
    help="step schedule: epochs between decays [default: the recipe's]",
)
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.0)
@click.option(
    "--standardize/--no-standardize",
    default=None,
    help="per-feature standardization fitted on train [default: the recipe's]",
)
@click.option(
    "--views",
    "view_mode",
    type=click.Choice(["draw", "mean"]),
    default="draw",
    help="a training store of K views per image: draw one per image and epoch (fresh augmentation), or "
    "average them (as DIFT averages its noise draws)",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    help="validation carved from train [default: the recipe's]",
)
@click.option(
    "--extend-edges",
    type=click.IntRange(min=0),
    default=0,
    help="when the choice sits on its grid's edge (lr, wd, logreg C), try one value beyond it at the "
    "grid's own ratio, and again, at most N times, until it is inside (0: only say so)",
)
@click.option(
    "--allow-overlap",
    is_flag=True,
    help="go on, with a warning, when train, val and test share images (found by their pixel digests) "
    "[default: refuse]",
)
@click.option("--seed", type=int, default=0)
@click.option(
    "--buffer-mb",
    type=click.IntRange(min=1),
    default=1024,
    help="memory for feature rows (bounds the shuffle window)",
)
@click.option(
    "--preload/--stream",
    default=None,
    help="hold the training features in memory [default: when they fit --buffer-mb]",
)
@click.option(
    "--logreg-c",
    multiple=True,
    default=("0.01,0.1,1,10",),
    callback=float_list,
    help="logreg inverse regularisation (grid)",
)
@click.option("--knn-k", multiple=True, default=("20",), callback=int_list, help="k-NN neighbours (grid)")
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=Path("results"),
    help="folder for results, heads and the table",
)
@click.option("--name", help="results name [default: heads and store name]")
@click.option("--device", help="cpu, cuda, cuda:1 [default: CUDA when present]")
@click.option("--progress/--no-progress", default=True)
@click.option(
    "--tensorboard",
    type=click.Path(path_type=Path),
    help="also write the per-epoch history (train loss, lr, each member's validation top-1) as "
    "TensorBoard event files under DIR/NAME",
)
@user_errors
def train(train_store, test_store, val_store, **kwargs):
    """Train heads (a grid: heads x features x lrs x wds) in one pass, select on validation, test."""
    from probe.run import probe

    if "all" in kwargs["blocks"]:
        kwargs["blocks"] = ()
    result = probe(
        probe_config(kwargs.pop("recipe"), train=train_store, test=test_store, val=val_store, **kwargs)
    )
    if result:
        click.echo(summary_lines(result))


@cli.command("eval")
@click.option("--head", "head", required=True, type=click.Path(path_type=Path), help="a saved .head.pt file")
@click.option("--store", required=True, type=STORE, help="store to evaluate on (folder or URL)")
@click.option("--out", type=click.Path(path_type=Path), help="write the full results JSON here")
@click.option("--device", default="cpu")
@click.option(
    "--allow-overlap",
    is_flag=True,
    help="go on, with a warning, when the store shares images with the head's training store",
)
@user_errors
def eval_cmd(head, store, out, device, allow_overlap):
    """Re-evaluate a saved head on a store's valid rows."""
    from probe.evaluate import evaluate_head
    from probe.tables import write_json

    result = evaluate_head(head, store, device, allow_overlap=allow_overlap)
    if out:
        write_json(out, result)
    click.echo(f"{store}: top-1 {result['top1']:.2f}, top-5 {result['top5']:.2f} on {result['rows']} rows")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/probe.json"))
@click.option(
    "--shape",
    "shapes",
    multiple=True,
    type=click.Choice(["demo", "imagenet"]),
    default=("demo", "imagenet"),
    help="feature shapes to time",
)
@click.option("--threads", type=click.IntRange(min=1), help="torch.set_num_threads [default: torch's]")
@click.option(
    "--flops-only", is_flag=True, help="only the compute: the bank's GFLOP/s beside torch.matmul (no store)"
)
@user_errors
def bench(out, shapes, threads, flops_only):
    """A grid of 16 linear heads against one head, store read vs training samples/s, and the
    bank's training GFLOP/s beside torch.matmul on the same GEMMs."""
    import torch

    from probe.bench.grid import BENCH_SHAPES, bench_probe, format_table
    from probe.tables import write_json

    if threads:
        torch.set_num_threads(threads)
    results = {name: bench_probe(**BENCH_SHAPES[name], store=not flops_only) for name in shapes}
    write_json(out, results)
    for name, result in results.items():
        click.echo(f"[{name}] " + format_table(result))
    click.echo(f"written: {out}")


@cli.command()
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=Path("results"),
    help="folder holding probe_results.csv",
)
@click.option("--last", type=click.IntRange(min=1), help="only the last N rows")
@user_errors
def table(results, last):
    """Print the results table: one row per probe run (the validation-selected member)."""
    from probe.tables import format_table, read_table

    path = results / "probe_results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results table at {path}: run `python -m probe train` first")
    rows = read_table(path)
    click.echo(format_table(rows[-last:] if last else rows))


@cli.command("select")
@click.option(
    "--results",
    "items",
    multiple=True,
    required=True,
    help="results JSON of a run (repeat, or a glob): the runs to choose among",
)
@click.option("--name", required=True, help="name of the chosen run's copy")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("results"),
    show_default=True,
    help="folder for NAME.json and its predictions",
)
@click.option(
    "--ties",
    type=click.Choice(["first", "last"]),
    default="first",
    show_default=True,
    help="which of equal validation scores wins, in the order given (globs in natural order: step2 "
    "before step10)",
)
@user_errors
def select_cmd(items, name, out, ties):
    """Choose one run among several on validation top-1 (e.g. fine-tuning at several lrs) and copy
    it as NAME."""
    from probe.select import select_run

    chosen = select_run(items, name, out, ties)
    scores = ", ".join(f"{r['name']} {r['val_top1']:.2f}" for r in chosen["selected_from"])
    click.echo(
        f"{out / name}.json: {chosen['selected_run']} (validation top-1 of {scores}); "
        f"test top-1 {chosen['test']['top1']:.2f}"
    )


@cli.command("bench-batches")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/batches.json"))
@user_errors
def bench_batches_cmd(out):
    """Distinct classes per training batch: class-sorted store vs `--order shuffled` vs i.i.d."""
    from probe.bench.batches import bench_batches, format_table
    from probe.tables import write_json

    result = bench_batches()
    write_json(out, result)
    click.echo(format_table(result))


@cli.command("bench-workflow")
@click.option(
    "--images",
    type=click.IntRange(min=16),
    default=2000,
    show_default=True,
    help="Fashion-MNIST training images per seed (a seeded subset)",
)
@click.option(
    "--val-images",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="held out from the same draw, for the convergence curve",
)
@click.option("--test-images", type=click.IntRange(min=10), default=10000, show_default=True)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=48,
    show_default=True,
    help="the same for every arm, so the same optimizer steps",
)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--views",
    multiple=True,
    default=("1,4,8",),
    callback=int_list,
    show_default=True,
    help="the cached arms: K views per image (1: center crop)",
)
@click.option("--seeds", multiple=True, default=("0,1,2",), callback=int_list, show_default=True)
@click.option(
    "--online/--no-online",
    default=True,
    show_default=True,
    help="also the two on-line arms (the U-Net in the loop; the slow part)",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bench-results/workflow.json"), show_default=True
)
@user_errors
def bench_workflow_cmd(images, val_images, test_images, epochs, batch, views, seeds, online, out):
    """Linear and attention heads trained at matched steps on-line (fresh crop, flip and noise;
    fresh noise only) and from caches of 1, 4 and 8 views, over seeds."""
    from probe.bench.workflow import WorkflowSettings, bench_workflow, format_table
    from probe.tables import write_json

    settings = WorkflowSettings(
        images=images,
        val_images=val_images,
        test_images=test_images,
        epochs=epochs,
        batch=batch,
        views=tuple(views),
        seeds=tuple(seeds),
        online=WorkflowSettings.online if online else (),
    )
    result = bench_workflow(settings, progress=lambda text: click.echo(f"bench-workflow: {text}", err=True))
    write_json(out, result)
    click.echo(format_table(result))


cli.add_command(finetune)
add_config_option(cli)  # every command takes --config FILE


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="python -m probe")
