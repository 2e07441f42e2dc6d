"""The generation commands of `python -m extract`: train and export the demo U-Net, sample,
train the demo classifier. Thin click shells; the work is in this package's modules."""

from __future__ import annotations

import json
from pathlib import Path

import click

from extract.data.registry import DATASETS
from extract.models.adm_presets import PRESETS
from extract.store.cli_options import run_options, user_errors


def add_generate_commands(group: click.Group) -> None:
    """Register train, export, sample and train-classifier on the extract command group."""

    @group.command()
    @click.option(
        "--model", type=click.Choice(list(PRESETS)), default="demo-fmnist", help="architecture to train"
    )
    @click.option("--data", type=click.Choice(list(DATASETS)), default="fashion-mnist")
    @click.option("--data-root", type=click.Path(path_type=Path))
    @run_options("runs/demo-fmnist", 320_000, "images to train on (sets the LR schedule)")
    @click.option("--batch-size", type=click.IntRange(min=1), default=64)
    @click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3)
    @click.option("--ema-rate", type=click.FloatRange(0, 1), default=0.999)
    @click.option("--seed", type=int, default=0)
    @click.option("--device", default="cpu")
    @click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: torch's choice]")
    @click.option(
        "--init",
        type=click.Path(path_type=Path, dir_okay=False),
        help="start from these weights (e.g. the shipped demo EMA) with a fresh optimizer",
    )
    @click.option(
        "--keep-every",
        type=click.IntRange(min=1),
        help="also keep the EMA every N steps (snapshots/ema-step<N>.pt), for curves over training",
    )
    @click.option("--warmup-steps", type=click.IntRange(min=0), default=200, show_default=True)
    @user_errors
    def train(**options):
        """Train a U-Net without labels (guided-diffusion's losses, EMA, uniform t), resumably."""
        from extract.generate.train import TrainConfig
        from extract.generate.train import train as train_model

        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        click.echo(json.dumps(train_model(TrainConfig(**options))))

    @group.command()
    @click.option(
        "--run",
        "run_dir",
        type=click.Path(path_type=Path),
        default=Path("runs/demo-fmnist"),
        help="training run folder",
    )
    @click.option(
        "--to", "dest", type=click.Path(path_type=Path), default=Path("extract/weights/demo-fmnist.pt")
    )
    @click.option(
        "--dtype",
        type=click.Choice(["float32", "float16"]),
        default="float32",
        help="storage dtype of the weights (loading casts to fp32)",
    )
    @user_errors
    def export(run_dir, dest, dtype):
        """Write a run's EMA weights as a plain state_dict file (what --ckpt loads)."""
        from extract.generate.train import export_ema
        from extract.models.weights import file_sha256

        meta = export_ema(run_dir, dest, dtype)
        click.echo(
            f"{dest}: step {meta['step']}, {meta['images_seen']} images, sha256 {file_sha256(dest)[:16]}"
        )
        # the loss log and a plot of it travel with the weights (the run folder is not committed)
        from extract.generate.run_files import read_log
        from extract.generate.train import LOG_FILE, plot_loss

        rows = read_log(run_dir)
        log = dest.with_name(dest.stem + "." + LOG_FILE)
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (dest.with_name(dest.stem + ".train_meta.json")).write_text(json.dumps(meta, indent=2) + "\n")
        click.echo(
            plot_loss(
                rows, dest.with_name(dest.stem + ".loss.png"), f"{meta['preset']['name']}: training loss"
            )
        )

    @group.command()
    @click.option(
        "--model", type=click.Choice(list(PRESETS)), default="demo-fmnist", help="guided-diffusion preset"
    )
    @click.option(
        "--ckpt",
        type=click.Path(path_type=Path),
        help="state_dict file [default: the preset's shipped weights]",
    )
    @click.option(
        "--random-init/--no-random-init", default=False, help="the random-weight control instead of weights"
    )
    @click.option(
        "--num-samples",
        "--n",
        "n",
        type=click.IntRange(min=1),
        default=64,
        help="number of images "
        "(under torchrun spell it --num-samples: torchrun takes --n for its own --nnodes)",
    )
    @click.option(
        "--steps",
        type=click.IntRange(min=1),
        default=250,
        help="respaced sampling steps (e.g. 250, 100, 50, 25)",
    )
    @click.option(
        "--sampler",
        type=click.Choice(["ddpm", "ddim"]),
        default="ddpm",
        help="ancestral (DDPM) or DDIM updates (extract.generate.sampling.SAMPLERS)",
    )
    @click.option(
        "--eta", type=click.FloatRange(min=0), default=0.0, help="DDIM noise scale (0: deterministic)"
    )
    @click.option(
        "--class-label",
        help="class-conditional presets: one class for every image, "
        "or 'all' (image i gets class i % 1000) [default: all]",
    )
    @click.option("--seed", type=int, default=0, help="image i's noise comes from (seed, i) alone")
    @click.option(
        "--batch-size", type=click.IntRange(min=1), default=16, help="images per forward (speed only)"
    )
    @click.option(
        "--shard-size",
        type=click.IntRange(min=1),
        default=1000,
        help="images per shard: the unit of resume and of the split between torchrun ranks",
    )
    @click.option(
        "--dtype",
        type=click.Choice(["fp32", "bf16", "fp16"]),
        default="fp32",
        help="autocast dtype of the U-Net",
    )
    @click.option("--device", help="[default: cuda if available]")
    @click.option(
        "--grid/--no-grid",
        default=None,
        help="one grid PNG of images 0..n-1 (the model card's figure) [default: when --out ends in .png]",
    )
    @click.option(
        "--out",
        type=click.Path(path_type=Path),
        default=Path("samples.png"),
        help="samples folder (PNGs, samples_NxHxWxC.npz, samples.json), or a .png grid",
    )
    @click.option(
        "--overwrite/--no-overwrite", default=False, help="replace samples made with other arguments"
    )
    @click.option("--progress/--no-progress", default=True)
    @user_errors
    def sample(grid, class_label, **options):
        """Draw N images, seeded per image and resumable by shards (torchrun splits the shards), as
        PNGs plus guided-diffusion's .npz and a provenance JSON; or one grid image."""
        from extract.generate.sample_folder import sample as draw
        from extract.generate.sampling import SampleConfig, parse_class_label
        from extract.generate.sampling import grid as draw_grid

        cfg = SampleConfig(class_label=parse_class_label(class_label), **options)
        click.echo(
            (draw_grid if (grid if grid is not None else cfg.out.suffix.lower() == ".png") else draw)(cfg)
        )

    @group.command("train-classifier")
    @click.option("--data", default="fashion-mnist", help="dataset (10 classes, grayscale)")
    @click.option("--data-root", type=click.Path(path_type=Path))
    @click.option(
        "--out",
        type=click.Path(path_type=Path),
        default=Path("extract/weights/fmnist-classifier.pt"),
        help="state_dict file (a .json of the run is written beside it)",
    )
    @click.option("--epochs", type=click.IntRange(min=1), default=5)
    @click.option(
        "--val-size",
        type=click.IntRange(min=1),
        default=6000,
        help="images carved from train to choose the epoch",
    )
    @click.option("--seed", type=int, default=0)
    @click.option("--threads", type=click.IntRange(min=1), default=1)
    @click.option("--progress/--no-progress", default=True)
    @user_errors
    def train_classifier(progress, **options):
        """Train the small CNN whose features `features --features classifier:FILE` computes
        (Fashion-MNIST)."""
        from extract.generate.classifier import ClassifierConfig
        from extract.generate.classifier import train_classifier as train

        record = train(ClassifierConfig(**options), progress=progress)
        click.echo(
            f"{options['out']}: epoch {record['best_epoch']}, val top-1 {record['val_top1']}, "
            f"test top-1 {record['test_top1']}, {record['seconds']} s, sha256 {record['sha256']}"
        )

    add_bigan_commands(group)
    from extract.generate.mae_commands import add_mae_commands  # click only, no torch

    add_mae_commands(group)


def add_bigan_commands(group: click.Group) -> None:
    """The BiGAN baseline: train-bigan, export-bigan, bigan-features, bigan-sample; and the classifier's
    layers (classifier-layers), the same kind of store as bigan-features."""

    @group.command("train-bigan")
    @click.option("--data", type=click.Choice(list(DATASETS)), default="fashion-mnist")
    @click.option("--data-root", type=click.Path(path_type=Path))
    @run_options(
        "runs/bigan-fmnist",
        1_280_000,
        "images to train on (20,000 steps of 64: about 0.7 of the demo U-Net's CPU time)",
        stop_step=False,
    )
    @click.option("--batch-size", type=click.IntRange(min=1), default=64)
    @click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4)
    @click.option("--z-dim", type=click.IntRange(min=1), default=64)
    @click.option(
        "--width", type=click.IntRange(min=1), default=64, help="channels of G's last / E's first stage"
    )
    @click.option("--seed", type=int, default=0)
    @click.option("--device", default="cpu")
    @click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: torch's choice]")
    @click.option(
        "--keep-every",
        type=click.IntRange(min=1),
        help="also keep the weights every N steps (snapshots/bigan-step<N>.pt)",
    )
    @click.option("--save-every", type=click.IntRange(min=1), default=250, help="steps between checkpoints")
    @click.option("--log-every", type=click.IntRange(min=1), default=25)
    @user_errors
    def train_bigan(**options):
        """Train the BiGAN baseline (G, E, joint D; BCE, Adam 2e-4) resumably, as `train` trains the
        demo U-Net."""
        from extract.generate.bigan_train import BiganTrainConfig, train

        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        click.echo(json.dumps(train(BiganTrainConfig(**options))))

    @group.command("export-bigan")
    @click.option(
        "--run",
        "run_dir",
        type=click.Path(path_type=Path),
        default=Path("runs/bigan-fmnist"),
        help="training run folder",
    )
    @click.option(
        "--to",
        "dest",
        type=click.Path(path_type=Path),
        required=True,
        help="weights file (its log and meta are written beside it)",
    )
    @click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32")
    @user_errors
    def export_bigan(run_dir, dest, dtype):
        """Write a BiGAN run's weights (G, E, D) as one plain state_dict file (what --weights loads)."""
        from extract.generate.bigan_train import export_bigan as export
        from extract.models.weights import file_sha256

        meta = export(run_dir, dest, dtype)
        click.echo(
            f"{dest}: step {meta['step']}, {meta['images_seen']} images, sha256 {file_sha256(dest)[:16]}"
        )

    @group.command("bigan-features")
    @click.option(
        "--weights",
        required=True,
        type=click.Path(path_type=Path),
        help="a BiGAN weights file (export-bigan)",
    )
    @staged_options("encoder blocks 1-3 (conv stages), 4 (z) [default: all]")
    @user_errors
    def bigan_features(blocks, **options):
        """The BiGAN encoder's per-stage features in the store schema (t=0, b=1..4), for probe and
        analysis."""
        click.echo(extract_staged_network("bigan-encoder", blocks, options))

    @group.command("bigan-sample")
    @click.option(
        "--weights",
        required=True,
        type=click.Path(path_type=Path),
        help="a BiGAN weights file (export-bigan)",
    )
    @click.option("--n", type=click.IntRange(min=1), default=10_000)
    @click.option("--seed", type=int, default=0, help="image i's z comes from (seed, i) alone")
    @click.option(
        "--out",
        required=True,
        type=click.Path(path_type=Path),
        help="samples folder (png/, samples_*.npz, samples.json), as `sample` writes",
    )
    @click.option("--overwrite/--no-overwrite", default=False)
    @user_errors
    def bigan_sample(weights, n, seed, out, overwrite):
        """Draw N images from a BiGAN's generator, readable by `analysis fid --fake DIR`."""
        from extract.generate.bigan_sample import sample_bigan

        click.echo(sample_bigan(weights, n, seed, out, overwrite=overwrite))

    @group.command("classifier-layers")
    @click.option(
        "--weights",
        type=click.Path(path_type=Path),
        help="a SmallCNN state_dict (train-classifier) [default: extract/weights/fmnist-classifier.pt]",
    )
    @staged_options(
        "classifier blocks 1-3 (body stages), 4 (embed, the 128 features), 5 (logits) [default: all]"
    )
    @user_errors
    def classifier_layers(blocks, **options):
        """Every layer of the Fashion-MNIST classifier in the store schema (t=0, b=1..5), for CKA
        against a U-Net's blocks."""
        click.echo(extract_staged_network("fmnist-classifier", blocks, options))


def staged_options(blocks_help: str):
    """The options of a staged network's store (extract.models.staged) after --weights, alike for
    every network."""
    from extract.store.cli_options import block_list, pool_list

    options = [
        click.option("--data", type=click.Choice(list(DATASETS)), default="fashion-mnist"),
        click.option("--data-root", type=click.Path(path_type=Path)),
        click.option("--split", default="train"),
        click.option("--out", required=True, type=click.Path(path_type=Path)),
        click.option("-b", "--block", "blocks", multiple=True, callback=block_list, help=blocks_help),
        click.option(
            "--pool",
            "pools",
            multiple=True,
            default=("1", "full"),
            callback=pool_list,
            help="pool sizes p (p x p), or 'full' for the whole map",
        ),
        click.option(
            "--skip-small-maps/--no-skip-small-maps",
            default=False,
            help="leave out (b, pool) pairs whose pool is larger than the block's map, instead of refusing",
        ),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            help="a seeded random subset (the same rows as extract run --limit)",
        ),
        click.option("--seed", type=int, default=0),
        click.option(
            "--batch-size", type=click.IntRange(min=1), default=256, help="images loaded at once (speed only)"
        ),
        click.option(
            "--micro-batch",
            type=click.IntRange(min=1),
            default=32,
            help="images per forward, the last group zero-padded "
            "(in the store key; values do not depend on --batch-size)",
        ),
        click.option("--device", default="cpu"),
        click.option("--overwrite/--no-overwrite", default=False),
        click.option("--progress/--no-progress", default=True),
    ]

    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def extract_staged_network(network: str, blocks, options: dict) -> str:
    """Run the staged family for one network from a command's flat options."""
    from extract.models.staged import StagedConfig, extract_staged
    from extract.store.config import from_flat

    blocks = () if "all" in blocks else blocks
    return extract_staged(from_flat(StagedConfig, network=network, blocks=blocks, **options))
