"""The timm family's config and options: any timm architecture (`--model timm:NAME`) in the
feature schema. Torch-free, so `extract run --help` names the options without importing timm.

Blocks are numbered b = 1..B, b = timm's `forward_intermediates` index + 1, as every other
family numbers from 1: a ViT's b is its transformer block (b=1: `blocks.0`), a CNN's its
feature stage (a timm ResNet: b=1 the stem's `act1` at stride 2, b=2..5 `layer1`..`layer4`).
`extract blocks --model timm:NAME` prints the table.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extract.store.config import DataSelection, StoreOptions, option

PREFIX = "timm:"
# how a block's output becomes the (C, H, W) map that --pool applies to
TOKEN_READOUTS = ("grid", "cls", "mean")
# create_model arguments that would fetch or load weights behind the family's back
REFUSED_ARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def parse_model_args(words: tuple[str, ...]) -> dict[str, Any]:
    """('img_size=32', 'depth=2') -> {'img_size': 32, 'depth': 2}: each value a Python literal
    (a number, a tuple, True, None), else the word as a string."""
    out: dict[str, Any] = {}
    for word in words:
        key, sep, text = word.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-arg {word!r}: expected KEY=VALUE, e.g. img_size=224")
        if key in REFUSED_ARGS:
            raise ValueError(f"--model-arg {key}: weights come from --ckpt only (or --random-init)")
        try:
            out[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key] = text.strip()
    return out


@dataclass(frozen=True)
class TimmOptions:
    """The options that say which network is built (`extract blocks` takes them too)."""

    model_args: tuple[str, ...] = option(
        (),
        "a timm.create_model argument, KEY=VALUE with a Python literal value (repeat), e.g. "
        "img_size=224 (the images follow it), depth=2; in the store key",
        flags=("--model-arg",),
        metavar="KEY=VALUE",
        network=True,
    )


@dataclass(frozen=True)
class TimmSpec:
    """What `timm:NAME` with its options builds: the timm name (with its pretrained tag, if any,
    which picks the preprocessing) and create_model's extra arguments."""

    name: str
    model_args: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_args)


def timm_name(model: str) -> str:
    """'timm:vit_small_patch14_dinov2' -> 'vit_small_patch14_dinov2'."""
    if not model.startswith(PREFIX) or len(model) == len(PREFIX):
        raise ValueError(f"a timm model is named {PREFIX}NAME, e.g. {PREFIX}resnet50; got {model!r}")
    return model[len(PREFIX) :]


def timm_spec(model: str, options: TimmOptions | None = None) -> TimmSpec:
    """The network `--model timm:NAME` with these options builds."""
    args = parse_model_args((options or TimmOptions()).model_args)
    return TimmSpec(timm_name(model), tuple(sorted(args.items())))


@dataclass(frozen=True)
class TimmConfig:
    store: StoreOptions
    selection: DataSelection = DataSelection()
    model: str = option(
        "timm:resnet50",
        "timm:NAME, any timm architecture, with its pretrained tag if any (timm:vit_base_patch16_224.mae)",
    )
    options: Any = option(None, family=True, cli=False)
    ckpt: Path | None = option(
        None,
        "weights: a .safetensors or weights-only torch state_dict file, or a local Hugging Face folder "
        "(a snapshot, or a hub cache holding models--timm--NAME); never downloaded",
        flags=("--ckpt", "--weights"),
    )
    random_init: bool = option(False, "random weights (seeded by --seed), a labelled control")
    blocks: tuple[int | str, ...] = option(
        (),
        "blocks b = forward_intermediates index + 1 (`extract blocks --model timm:NAME`), 'all', or "
        "a feature module name (blocks.3, layer2) [default: all]",
        flags=("-b", "--block", "--b"),
    )
    pools: tuple[int | None, ...] = option(
        (2,), "pool sizes p (p x p), or 'full' for the whole map", flags=("--pool",)
    )
    tokens: str = option(
        "grid",
        "what --pool applies to: grid (patch tokens, or a CNN's map, as C x H x W), cls (the class "
        "token as C x 1 x 1), mean (the mean of patch tokens as C x 1 x 1, as --pool 1 of grid)",
        choices=TOKEN_READOUTS,
    )
    seed: int = option(0, "seeds --limit and the random weights")
    batch_size: int = option(32, "images loaded at once (speed only)", min=1)
    micro_batch: int = option(16, "images per forward, the last group zero-padded (in the store key)", min=1)
    device: str | None = option(None, "cpu, cuda, cuda:1 ... [default: cuda if available]")

    def __post_init__(self):
        if self.options is None:
            object.__setattr__(self, "options", TimmOptions())
        timm_name(self.model)
