"""End-to-end fine-tuning of a U-Net's early-exit prefix together with a head (`python -m probe finetune`).

This is the one probe module that loads a U-Net: fine-tuning needs the model inside the training
loop, so it imports extract's model, block, noise and data code. probe's cached-feature path
(reader, grid, run, and the CLI at import time) never imports it; the CLI loads it inside its
command (`tests/test_imports.py` checks both).

What trains: the U-Net's layers up to block b (the time embedding and blocks 1..b; the forward
stops after b, so nothing after it enters the graph) and the head on the pooled activation of b.
Each step draws a fresh crop and flip of every image and fresh noise, both keyed by (seed, image,
epoch) alone, so the stream does not depend on batch size, process count or resume point. The
paper's released code (diffssl, `--mode finetune`) puts encoder and head in one SGD optimizer at
lr 1e-3 with StepLR(7, 0.1); that is the `paper` recipe here. Validation (a class-stratified carve
of the training split) picks the epoch; the test split is evaluated once, on that epoch's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extract.data.augment import AUGMENTATIONS
from extract.data.sources import preprocess, to_mode
from extract.models.adm_blocks import capture, unet_blocks
from extract.models.noise import draw_noise, q_sample
from extract.models.pooling import pool

STATE_FILE = "finetune_state.pt"
# evaluation noise is extraction's view 0, so a fine-tuned model's test features equal a cache's
EVAL_VIEW = 0
TRAIN_VIEW_BASE = 1_000_000  # training noise of epoch e is view TRAIN_VIEW_BASE + e: never an evaluation draw


@dataclass(frozen=True)
class FtRecipe:
    optimizer: str
    lr: float  # the U-Net prefix's
    head_lr: float
    epochs: int
    batch_size: int
    schedule: str  # "step": x0.1 every 7 epochs; "cosine": to 0 over the run
    aug: str = "crop-flip"  # the training images' augmentation (extract.data.augment)
    fp16_weights: bool = False  # the U-Net's convolutions held and updated in fp16, no fp32 master copy
    # None: the config's; 0: all of train, no validation, the last epoch is reported
    val_fraction: float | None = None
    # epochs between scorings of the test split along the way (reported, never chosen on); 0: only at the end
    eval_every: int = 0


FT_RECIPES: dict[str, FtRecipe] = {
    # one SGD at lr 1e-3 with StepLR(7, 0.1), as diffssl's --mode finetune, with our fp32 weights,
    # crop-flip and a validation carve
    "paper": FtRecipe("sgd", 1e-3, 1e-3, 28, 128, "step"),
    # diffssl's finetune mode as its code runs it: convert_to_fp16's fp16 convolutions updated in
    # place by plain SGD (no master copy, no loss scaling), guided-diffusion's random crop and flip,
    # its defaults of 50 epochs and 16 images per GPU (64 on the 4 GPUs of its head scripts), all
    # of train, the last epoch reported (nothing to choose it with); the test split scored every 7
    # epochs along the way, its eval_interval
    "diffssl": FtRecipe(
        "sgd",
        1e-3,
        1e-3,
        50,
        64,
        "step",
        aug="gd-crop-flip",
        fp16_weights=True,
        val_fraction=0.0,
        eval_every=7,
    ),
    "diffprobe": FtRecipe("adamw", 1e-4, 1e-3, 10, 128, "cosine"),
}
TRAINABLE = ("all", "norms-biases")


@dataclass(frozen=True)
class FinetuneConfig:
    out: Path  # run folder: resumable state, exported weights
    model: str = "demo-fmnist"
    ckpt: Path | None = None
    random_init: bool = False
    data: str = "fashion-mnist"
    data_root: Path | None = None
    train_split: str = "train"
    test_split: str = "test"
    limit: int | None = None  # training images (a seeded subset); validation is carved from them
    test_limit: int | None = None
    t: int = 150
    block: int | None = None  # None: the preset's default block
    pool: int | None = 2
    head: str = "linear"
    head_options: tuple[str, ...] = ()
    recipe: str = "paper"
    epochs: int | None = None  # None: the recipe's
    batch_size: int | None = None
    lr: float | None = None
    head_lr: float | None = None
    freeze_blocks: int = 0  # blocks 1..k stay as loaded
    # or "norms-biases": only GroupNorm weights and biases of the prefix, and every bias
    trainable: str = "all"
    ema_rate: float = 0.0  # 0: no EMA; else evaluation and export use the EMA of the weights
    # augmented training images (the recipe's: crop-flip, or gd-crop-flip for diffssl); evaluation
    # uses the center crop
    aug: bool = True
    val_fraction: float = 0.1
    # None: the recipe's; N: score the test split every N epochs (reported only); 0: never along the way
    eval_every: int | None = None
    grad_checkpoint: bool = False  # recompute each block in backward: less memory for the 256x256 model
    checkpoint_every: int = 50  # steps between resumable saves
    seed: int = 0
    device: str = "cpu"
    dtype: str = "fp32"  # "bf16": autocast (CUDA)
    name: str | None = None
    results: Path = Path("results")
    progress: bool = True
    tensorboard: Path | None = None  # also write the per-epoch history as TensorBoard event files here

    def resolved(self) -> dict:
        """The recipe's values for every option left unset."""
        r = FT_RECIPES[self.recipe]
        return {
            "optimizer": r.optimizer,
            "schedule": r.schedule,
            "epochs": self.epochs or r.epochs,
            "batch_size": self.batch_size or r.batch_size,
            "lr": r.lr if self.lr is None else self.lr,
            "head_lr": (r.head_lr if self.lr is None else self.lr) if self.head_lr is None else self.head_lr,
            "aug": r.aug if self.aug else "none",
            "fp16_weights": r.fp16_weights,
            "val_fraction": self.val_fraction if r.val_fraction is None else r.val_fraction,
            "eval_every": r.eval_every if self.eval_every is None else self.eval_every,
        }


# fields that change no value of the run: resuming with other values is allowed
_NOT_IN_RUN = {
    "out",
    "checkpoint_every",
    "device",
    "progress",
    "results",
    "name",
    "eval_every",
    "tensorboard",
}


def validate(cfg: FinetuneConfig) -> None:
    if cfg.recipe not in FT_RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; choose one of: {', '.join(FT_RECIPES)}")
    if cfg.trainable not in TRAINABLE:
        raise ValueError(f"--trainable must be one of {', '.join(TRAINABLE)}, got {cfg.trainable!r}")
    if cfg.ckpt is not None and cfg.random_init:
        raise ValueError("--ckpt and --random-init exclude each other")
    if not 0 <= cfg.ema_rate < 1:
        raise ValueError(f"--ema-rate must be in [0, 1), got {cfg.ema_rate}")
    if not 0 < cfg.val_fraction < 1:
        raise ValueError(
            f"--val-fraction must be in (0, 1): validation picks the epoch, got {cfg.val_fraction}"
        )
    if cfg.eval_every is not None and cfg.eval_every < 0:
        raise ValueError(f"--eval-every must be 0 or more epochs, got {cfg.eval_every}")


# ---------------------------------------------------------------- the model
def prefix_modules(model: nn.Module, block: int) -> dict[str, nn.Module]:
    """The modules the forward up to block b runs: the time (and class) embedding and blocks 1..b."""
    blocks = unet_blocks(model)
    if block not in blocks:
        raise ValueError(f"block {block} is outside 1..{len(blocks)}")
    out = {name: module for b, (name, module) in blocks.items() if b <= block}
    out["time_embed"] = model.time_embed
    if getattr(model, "label_emb", None) is not None:
        out["label_emb"] = model.label_emb
    return out


def trainable_parameters(
    model: nn.Module, block: int, freeze_blocks: int, trainable: str
) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the U-Net that train; every other parameter gets requires_grad False."""
    keep = {}
    frozen = {name for b, (name, _) in unet_blocks(model).items() if b <= freeze_blocks}
    for prefix, module in prefix_modules(model, block).items():
        if prefix in frozen:
            continue
        for sub, m in module.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                if trainable == "all" or isinstance(m, nn.GroupNorm) or pname == "bias":
                    keep[f"{prefix}.{sub}.{pname}" if sub else f"{prefix}.{pname}"] = p
    for p in model.parameters():
        p.requires_grad_(False)
    for p in keep.values():
        p.requires_grad_(True)
    return sorted(keep.items())


def use_grad_checkpointing(model: nn.Module, block: int) -> None:
    """Recompute each block of the prefix in the backward pass instead of keeping its activations."""
    from torch.utils.checkpoint import checkpoint

    for b, (_, module) in unet_blocks(model).items():
        if b <= block:
            forward = module.forward
            module.forward = lambda *args, _f=forward, **kw: checkpoint(_f, *args, use_reentrant=False, **kw)


class PrefixClassifier(nn.Module):
    """x0-space input -> logits: noise to t, the U-Net up to block b, pool, head.

    x_t: (N, C, S, S) already noised; returns (N, classes)."""

    def __init__(self, unet: nn.Module, head: nn.Module, t: int, block: int, pool_size: int | None):
        super().__init__()
        self.unet, self.head, self.t, self.block, self.pool_size = unet, head, t, block, pool_size

    def features(self, x_t: torch.Tensor) -> torch.Tensor:
        steps = torch.full((len(x_t),), self.t, device=x_t.device)
        return pool(
            capture(self.unet, x_t, steps, [self.block], stop_early=True)[self.block].float(), self.pool_size
        )  # fp16 U-Nets give fp16

    def forward(self, x_t: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_t))


# ---------------------------------------------------------------- data
def images(
    source, rows: np.ndarray, preset, *, seed: int, epoch: int | None, aug: str = "crop-flip"
) -> torch.Tensor:
    """(len(rows), C, S, S) in [-1, 1]: epoch None (or aug "none") is the evaluation center crop,
    else this epoch's seeded augmentation of each image (`aug`, a name of extract.data.augment)."""
    augment = AUGMENTATIONS[aug] if epoch is not None else None
    out = []
    for i in rows.tolist():
        img = source.load(int(i))
        if augment is not None:
            img = augment(to_mode(img, preset.in_channels), seed, int(i), epoch, preset.image_size)
        out.append(preprocess(img, preset.image_size, preset.in_channels))
    return torch.stack(out)


def noised(preset, x0: torch.Tensor, rows: np.ndarray, t: int, seed: int, view: int) -> torch.Tensor:
    eps = draw_noise(tuple(x0.shape[1:]), seed, rows.tolist(), t, view)
    return q_sample(preset, x0, t, eps)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 31]).permutation(n)
