"""`python -m probe finetune`: the command of the room that trains the U-Net with a head.

Its code (probe.finetune, which loads a model) is imported inside the command only, so the
other probe commands never load it.
"""

from __future__ import annotations

from pathlib import Path

import click

from extract.store.cli_options import user_errors
from probe.config import HEAD_NAMES


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="run folder: resumable state and the exported U-Net (finetuned.pt)",
)
@click.option(
    "--model",
    default="demo-fmnist",
    show_default=True,
    help="a guided-diffusion preset (python -m extract presets)",
)
@click.option(
    "--ckpt", type=click.Path(path_type=Path), help="weights file [default: the preset's shipped weights]"
)
@click.option(
    "--random-init/--no-random-init", default=False, help="start from the preset's random-weight control"
)
@click.option("--data", default="fashion-mnist", show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--train-split", default="train", show_default=True)
@click.option("--test-split", default="test", show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=2),
    help="training images, a seeded subset (validation is carved from them)",
)
@click.option("--test-limit", type=click.IntRange(min=1))
@click.option("-t", "t", type=click.IntRange(min=0), default=150, show_default=True)
@click.option(
    "-b",
    "block",
    type=click.IntRange(min=1),
    help="the block the head reads [default: the preset's, b=24 on ADM-256]",
)
@click.option("--pool", default="2", show_default=True, help="adaptive average pool size, or 'full'")
@click.option("--head", type=click.Choice(HEAD_NAMES), default="linear", show_default=True)
@click.option("--head-opt", "head_options", multiple=True, help="NAME=VALUE for the head, e.g. width=256")
@click.option(
    "--recipe",
    type=click.Choice(["paper", "diffssl", "diffprobe"]),
    default="paper",
    show_default=True,
    help="paper: diffssl's optimizer (one SGD, lr 1e-3, StepLR(7)), 28 epochs, batch 128, fp32 weights, "
    "a validation carve; diffssl: its code as it runs (fp16 convolutions updated in place, its random "
    "crop, 50 epochs, batch 64, all of train, "
    "the last epoch); diffprobe: AdamW, U-Net 1e-4, head 1e-3, cosine",
)
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--lr", type=float, help="the U-Net's learning rate (and the head's, unless --head-lr)")
@click.option("--head-lr", type=float)
@click.option(
    "--freeze-blocks",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="keep blocks 1..k as loaded",
)
@click.option(
    "--trainable",
    type=click.Choice(["all", "norms-biases"]),
    default="all",
    show_default=True,
    help="norms-biases: only GroupNorm weights and biases train in the U-Net",
)
@click.option(
    "--ema-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="evaluate and export the EMA of the weights (0: off)",
)
@click.option(
    "--aug/--no-aug",
    default=True,
    show_default=True,
    help="a fresh crop and flip per image and epoch (the recipe's kind)",
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="class-stratified carve of train that picks the epoch (the diffssl recipe: none)",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=0),
    help="score the test split every N epochs along the way, reported only (0: at the end only) "
    "[default: the recipe's: 7 for diffssl, as its eval_interval; else 0]",
)
@click.option(
    "--grad-checkpoint/--no-grad-checkpoint",
    default=False,
    show_default=True,
    help="recompute blocks in backward (memory for the 256x256 model)",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16: autocast (CUDA)",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="steps between resumable saves",
)
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--name")
@click.option("--progress/--no-progress", default=True)
@click.option(
    "--tensorboard",
    type=click.Path(path_type=Path),
    help="also write the per-epoch history (train loss, lr, validation top-1) as TensorBoard event "
    "files under DIR/NAME",
)
@user_errors
def finetune(pool, **options):
    """Fine-tune the U-Net up to block b with a head, end to end (the U-Net in the loop; torchrun for DDP)."""
    from extract.store.schema import parse_pool
    from probe.finetune.model import FinetuneConfig
    from probe.finetune.run import finetune as run

    result = run(FinetuneConfig(pool=parse_pool(pool), **options))
    if result:
        val = result["val"]["top1"]
        how = f"chosen on validation ({val:.2f})" if val is not None else "the last (no validation)"
        click.echo(
            f"{result['name']}: epoch {result['head']['epoch']} {how}; "
            f"test top-1 {result['test']['top1']:.2f} on {result['test']['rows']} images; "
            f"U-Net written to {result['exported']}"
        )
