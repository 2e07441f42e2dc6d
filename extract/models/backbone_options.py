"""The backbone family's config: standard torchvision backbones (extract.models.backbones) in the
feature schema. Torch-free, so the command line names them without importing torchvision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from extract.store.config import DataSelection, StoreOptions, option

# the keys of extract.models.backbones.BACKBONES (a test keeps them equal)
BACKBONE_NAMES = ("torchvision:resnet50", "torchvision:vit_b_16")


@dataclass(frozen=True)
class BackboneConfig:
    store: StoreOptions
    # backbones are compared on held-out images
    selection: DataSelection = DataSelection(split="test")
    model: str = option("torchvision:resnet50", "torchvision backbone", choices=BACKBONE_NAMES)
    weights: Path | None = option(
        None, "a local torchvision state_dict file (never downloaded)", flags=("--weights", "--ckpt")
    )
    random_init: bool = option(False, "random weights instead of --weights")
    blocks: tuple[int, ...] = option(
        (), "blocks (resnet50: 1-4 = layer1-4; vit_b_16: 1-12) [default: all]", flags=("-b", "--block")
    )
    pools: tuple[int | None, ...] = option(
        (2,), "pool sizes p (p x p), or 'full' for the whole map", flags=("--pool",)
    )
    seed: int = option(0, "seeds --limit and the random weights")
    batch_size: int = option(32, "images loaded at once (speed only)", min=1)
    micro_batch: int = option(
        16,
        "images per forward, the last group zero-padded (in the store key; values do not depend on "
        "--batch-size)",
        min=1,
    )
    device: str | None = option(None, "cpu, cuda, cuda:1 ... [default: cuda if available]")
