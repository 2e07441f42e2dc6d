"""The configs of every store writer, and the key that names what a store holds (torch-free).

`DataSelection` says which images (dataset, split, subsets); `StoreOptions` says where and
how the store is written. `ExtractConfig`, `PixelConfig` and `BackboneConfig` each hold one
of both, so the options mean the same thing for every kind of store, and the command line
reads its defaults from here. Stores record a config flat (one name per option, as the
command line spells them): `flat` writes that form and `from_flat` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataSelection:
    """Which images: a dataset split, optionally narrowed (applied in this order: classes,
    image list, per-class sampler, random limit; see extract.data.subsets)."""

    data: str = "fashion-mnist"
    data_root: Path | None = None
    split: str = "train"
    data_opts: tuple[str, ...] = ()  # dataset options, key=value (e.g. level=family for aircraft)
    classes_file: Path | None = None  # keep only these classes
    subset: Path | None = None  # keep only the images this file lists (e.g. ImageNet's 1% list)
    per_class: int | None = None  # N seeded images of each class
    limit: int | None = None  # a seeded random subset of this many images
    order: str = "sorted"  # row order in the store: "sorted" (dataset order) or "shuffled" (seeded)
    data_seed: int | None = None  # seeds the per-class sampler, the limit and the order; None: the run's seed


@dataclass(frozen=True)
class StoreOptions:
    """Where the store goes and how it is written (none of these change a value)."""

    out: Path
    shard_rows: int = 2048  # rows per shard: the unit of work, writing and resume
    overwrite: bool = False  # replace a store made with other arguments
    allow_mismatch: bool = (
        False  # resume a store made with another micro-batch or device type (recorded in its attrs)
    )
    progress: bool = True


PARTS = {"selection": DataSelection, "store": StoreOptions}


def flat(cfg) -> dict:
    """A config as one flat dict: the parts' fields inline, next to the config's own."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out.update(dataclasses.asdict(value) if f.name in PARTS else {f.name: value})
    return out


def from_flat(cls, **values):
    """Build a config from flat names (as the command line and stores spell them). An unknown
    name is an error, never ignored."""
    own = {f.name for f in dataclasses.fields(cls)}
    parts = {name: PARTS[name] for name in own & set(PARTS)}
    known = (own - set(parts)) | {f.name for part in parts.values() for f in dataclasses.fields(part)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
    kwargs = {k: v for k, v in values.items() if k in own and k not in parts}
    for name, part in parts.items():
        given = {f.name: values[f.name] for f in dataclasses.fields(part) if f.name in values}
        default = next(f for f in dataclasses.fields(cls) if f.name == name).default
        if default is dataclasses.MISSING:
            kwargs[name] = part(**given)
        else:
            kwargs[name] = dataclasses.replace(default, **given)
    return cls(**kwargs)


# autocast dtypes of a forward (extract.models.precision maps them to torch dtypes)
FORWARD_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ExtractConfig:
    """Everything an extraction run needs: where it writes (`store`), which images
    (`selection`) and how they become features. Options named in `_NOT_IN_KEY` change speed,
    not values; every other option is part of the store's key. Build one from the flat
    option names with `from_flat(ExtractConfig, ...)`."""

    store: StoreOptions
    selection: DataSelection = DataSelection()
    model: str = "demo-fmnist"
    model_flags: str = ""  # a guided-diffusion flag line (extract.models.adm_flags): the U-Net is built from it, and `model` stays at its default
    ckpt: Path | None = None
    random_init: bool = False
    aug: str = "none"  # "crop-flip": view v of image i is a seeded crop + flip (training splits)
    ts: tuple[int, ...] = (150,)
    blocks: tuple[
        int | str, ...
    ] = ()  # empty: the preset's default block (b=24 on ADM-256); "all": every block
    pools: tuple[int | None, ...] = (2,)
    block_pools: tuple[
        str, ...
    ] = ()  # "B:P[,P]": block B's own pools instead of `pools` (e.g. "30:16": b=30 pooled to 16x16)
    views: int = 1
    seed: int = 0  # draws the subset, the noise, the views and the random-init weights
    dtype: str = "fp32"  # autocast dtype of the forward
    store_dtype: str = "float16"
    class_label: int | None = (
        None  # the label fed to class-conditional models, every image: default 0 (ADM), the null class 1000 (DiT)
    )
    prompt: str = ""  # SD presets: the prompt every image is paired with (encoded once per run)
    model_dir: Path | None = (
        None  # latent presets: a local diffusers model folder (VAE, text encoder, scheduler, denoiser)
    )
    cond: Path | None = (
        None  # --model diffusers: a safetensors file of named conditioning tensors (prompt_embeds, ...); in the key by its hash
    )
    latents: Path | None = (
        None  # latent presets: the latent cache store [default: latents/<preset>-<hash>.zarr beside --out]
    )
    micro_batch: int = 16  # the forward's batch shape: fixed per store, since kernels round by shape
    skip_bad: bool = False
    skip_small_maps: bool = False  # leave out (b, pool) pairs whose pool exceeds the block's map
    batch_size: int = 64  # images per loader step: any value gives the same bits
    workers: int = 0
    device: str | None = None


# the files' contents enter the key through the dataset's selection digest, not their paths
# (a shuffled row order enters through the dataset part of the key, as for every store kind)
_NOT_IN_KEY = {
    "out",
    "ckpt",
    "model_dir",
    "latents",
    "data_root",
    "batch_size",
    "workers",
    "device",
    "overwrite",
    "allow_mismatch",
    "progress",
    "data_opts",
    "classes_file",
    "subset",
    "order",
    "data_seed",
}  # which rows: the dataset part of the key names them
_NOT_IN_KEY |= {
    "model_flags",
    "cond",
}  # in the key as the preset it builds (`model`: its dict holds the canonical flag line)
# in the key only when set, so stores made before these options existed keep their key
_KEY_IF_SET = {"per_class": None, "aug": "none", "skip_small_maps": False, "prompt": "", "block_pools": ()}


@dataclass(frozen=True)
class AtMost:
    """A block's pool "maxN": pooled to N x N where its map is larger, else kept whole (what
    diffssl's fusion head does to every block, AdaptiveAvgPool2d(min(size, 16)))."""

    n: int


def parse_block_pools(items: tuple[str, ...]) -> dict[int, tuple]:
    """("30:16", "19:full,2", "30:max16") -> {30: (16,), 19: (None, 2)} or {30: (AtMost(16),)};
    a malformed item is one clear error."""
    from extract.store.schema import parse_pool

    out: dict[int, tuple] = {}
    for item in items:
        block, sep, pools = str(item).partition(":")
        try:
            b = int(block)
            if not sep or not pools.strip():
                raise ValueError
            words = [p.strip().lower() for p in pools.split(",") if p.strip()]
            out[b] = tuple(
                dict.fromkeys(AtMost(int(w[3:])) if w.startswith("max") else parse_pool(w) for w in words)
            )
            if any(isinstance(p, AtMost) and p.n < 1 for p in out[b]):
                raise ValueError("maxN needs N >= 1")
        except ValueError as e:
            detail = f": {e}" if str(e) else ""
            raise ValueError(
                f"--block-pool {item!r}: expected B:P[,P] with P a size, full or maxN, e.g. 30:16, 19:full or 30:max16{detail}"
            ) from None
    return out


def pools_by_block(cfg: ExtractConfig, blocks) -> dict[int, tuple[int | None, ...]]:
    """Each block's pools: its own (--block-pool), else the run's --pool. A --block-pool for a
    block the run does not extract is an error."""
    own = parse_block_pools(cfg.block_pools)
    stray = sorted(set(own) - set(blocks))
    if stray:
        raise ValueError(
            f"--block-pool names block(s) {stray} that are not extracted (blocks {list(blocks)})"
        )
    return {b: own.get(b, tuple(cfg.pools)) for b in blocks}


def class_label(cfg: ExtractConfig, preset) -> int | None:
    """The label class-conditional models get: as given, else 0 (ADM) or the null class (DiT)."""
    if not preset.class_cond:
        return None
    default = getattr(preset, "null_class", None) or 0
    return default if cfg.class_label is None else cfg.class_label


def store_key(
    cfg: ExtractConfig, preset, blocks, weights: dict, dataset: dict, device_type: str, preprocessing: str
) -> dict:
    """Everything that changes a cached value. Two runs with equal keys write equal bytes."""
    fields = {k: v for k, v in flat(cfg).items() if k not in _NOT_IN_KEY}
    fields = {k: v for k, v in fields.items() if k not in _KEY_IF_SET or v != _KEY_IF_SET[k]}
    fields.update(
        ts=list(cfg.ts),
        blocks=list(blocks),
        pools=list(cfg.pools),
        model=preset.to_dict(),
        class_label=class_label(cfg, preset),
        weights=weights,
        dataset=dataset,
        preprocessing=preprocessing,
        device_type=device_type,
    )
    return fields


def json_roundtrip(obj):
    """The value as it reads back from Zarr attrs (tuples become lists, paths strings)."""
    return json.loads(json.dumps(obj, default=str))
