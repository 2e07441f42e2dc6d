"""`extract train-mae` and `extract export-mae`: thin click shells over extract.generate.mae_train.
Their defaults mirror MaeTrainConfig's (a test holds them equal), so `extract --help` imports no torch."""

from __future__ import annotations

import json
from pathlib import Path

import click

from extract.data.registry import DATASETS
from extract.store.cli_options import run_options, user_errors

# MaeTrainConfig's defaults without importing torch (this module is on `extract --help`'s path)
_D = dict(
    out="runs/mae-fmnist",
    max_images=256_000,
    batch_size=128,
    lr=1e-3,
    warmup_steps=200,
    mask_ratio=0.75,
    save_every=100,
    log_every=20,
    threads=1,
)


def add_mae_commands(group: click.Group) -> None:
    """Register train-mae and export-mae on the extract command group."""

    @group.command("train-mae")
    @click.option("--data", type=click.Choice(list(DATASETS)), default="fashion-mnist")
    @click.option("--data-root", type=click.Path(path_type=Path))
    @run_options(_D["out"], _D["max_images"], "images to train on (sets the lr schedule)")
    @click.option("--batch-size", type=click.IntRange(min=1), default=_D["batch_size"], show_default=True)
    @click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_D["lr"], show_default=True)
    @click.option("--warmup-steps", type=click.IntRange(min=0), default=_D["warmup_steps"], show_default=True)
    @click.option(
        "--mask-ratio",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=_D["mask_ratio"],
        show_default=True,
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--threads", type=click.IntRange(min=1), default=_D["threads"], show_default=True)
    @click.option(
        "--keep-every",
        type=click.IntRange(min=1),
        help="also keep the encoder every N steps (snapshots/encoder-step<N>.safetensors)",
    )
    @click.option("--save-every", type=click.IntRange(min=1), default=_D["save_every"], show_default=True)
    @click.option("--log-every", type=click.IntRange(min=1), default=_D["log_every"], show_default=True)
    @user_errors
    def train_mae(**options):
        """Train the masked autoencoder (timm ViT encoder, light decoder, 75% of patches masked,
        per-patch normalised pixel loss) resumably, as `train` trains the demo U-Net."""
        from extract.generate.mae_train import MaeTrainConfig, train

        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        click.echo(json.dumps(train(MaeTrainConfig(**options))))

    @group.command("export-mae")
    @click.option(
        "--run",
        "run_dir",
        type=click.Path(path_type=Path),
        default=Path(_D["out"]),
        help="training run folder",
    )
    @click.option(
        "--to",
        "dest",
        type=click.Path(path_type=Path),
        required=True,
        help="weights file, .safetensors (its log and meta are written beside it)",
    )
    @click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
    @user_errors
    def export_mae(run_dir, dest, dtype):
        """Write an MAE run's encoder as a timm state_dict (safetensors), what `run --model timm:...
        --ckpt` loads."""
        from extract.generate.mae_train import export_mae as export
        from extract.models.weights import file_sha256

        meta = export(run_dir, dest, dtype)
        click.echo(
            f"{dest}: step {meta['step']}, {meta['images_seen']} images, sha256 {file_sha256(dest)[:16]}"
        )
