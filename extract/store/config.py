"""The configs of every store writer, and the key that names what a store holds (torch-free).

`DataSelection` says which images (dataset, split, subsets); `StoreOptions` says where and
how the store is written. `ExtractConfig`, `PixelConfig` and `BackboneConfig` each hold one
of both, so the options mean the same thing for every kind of store. Each field carries its
command-line help (`option`), and the command line is generated from the fields, so a default
is written once, here or in the family's options class. Stores record a config flat (one name
per option, as the command line spells them): `flat` writes that form and `from_flat` reads it
back.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from extract.store.location import StoreURL, store_location


def option(default: Any = dataclasses.MISSING, help: str = "", **cli: Any) -> Any:
    """A config field with its command-line form: `help`, and where the field's name and type
    are not enough, `flags` (e.g. ("-t", "--t")), `min` (an integer's lowest value), `choices`,
    `metavar`, `convert` (the command's text -> the value; may raise ValueError), `network`
    (it says which network a model name builds: `extract blocks` takes it too) or `cli=False`
    (no option). extract.store.cli_options turns the fields into click options."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class DataSelection:
    """Which images: a dataset split, optionally narrowed (applied in this order: classes,
    image list, per-class sampler, random limit; see extract.data.subsets)."""

    data: str = option(
        "fashion-mnist", "dataset (`python -m extract datasets` lists them with their layouts)"
    )
    data_root: Path | None = option(None, "dataset location (folder or file)")
    split: str = option("train", "dataset split")
    data_opts: tuple[str, ...] = option(
        (),
        "dataset option key=value, e.g. level=family (aircraft), labels=coarse (cifar100), "
        "label=json:class (webdataset), image=img label=fine_label (hf); `datasets` lists each one's",
        flags=("--data-opt",),
    )
    classes_file: Path | None = option(
        None,
        "file of classes to keep (synsets or names, one a line); labels renumbered",
        flags=("--classes",),
    )
    subset: Path | None = option(
        None, "file of images to keep (ids or file names, one a line), e.g. ImageNet's 1%/10% lists"
    )
    per_class: int | None = option(None, "keep N images of each class, drawn with --seed", min=1)
    limit: int | None = option(None, "a seeded random subset of this many images", min=1)
    order: str = option(
        "sorted",
        "row order of the store: dataset order (class by class), or a seeded shuffle so consecutive "
        "rows mix classes",
        choices=("sorted", "shuffled"),
    )
    data_seed: int | None = option(
        None,
        "seeds --per-class, --limit and --order alone, so that several --seed (noise) runs read the "
        "same images [default: --seed]",
    )


@dataclass(frozen=True)
class StoreOptions:
    """Where the store goes and how it is written (none of these change a value). `out` is a
    folder or a URL; it is kept as `store_location` reads it (a Path or a StoreURL)."""

    out: Path | StoreURL = option(
        help="store to create or resume: a .zarr folder, or a URL (s3://bucket/path/name.zarr, gs://, az://)",
        store=True,
    )
    shard_rows: int = option(2048, "rows per shard (the unit of work and resume)", min=1)
    overwrite: bool = option(False, "replace a store made with other arguments")
    allow_mismatch: bool = option(
        False,
        "resume a store made with another --micro-batch or device: the shards still to write differ "
        "from the others by float rounding (recorded in the store's attrs as resumed_with)",
    )
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self):
        object.__setattr__(self, "out", store_location(self.out))


PARTS = {"selection": DataSelection, "store": StoreOptions}


def _family_options(model: str) -> type:
    """The options class of a model's family. The family registry is a stage above this floor, so
    it is named here and imported when a config is first built, never when this module loads."""
    return importlib.import_module("extract.models.families").options_class(model)


def flat(cfg) -> dict:
    """A config as one flat dict: the parts' fields and the family options' fields inline, next
    to the config's own, in the order the config records them."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in PARTS:
            out.update(dataclasses.asdict(value))
        elif f.metadata.get("family"):
            out.update({g.name: getattr(value, g.name) for g in dataclasses.fields(value)})
        else:
            out[f.name] = value
    unset = getattr(cfg, "RECORDED_UNSET", {})
    if unset:
        order = {name: i for i, name in enumerate(cfg.RECORD_ORDER)}
        out = {**{k: v for k, v in unset.items() if k not in out}, **out}
        out = dict(sorted(out.items(), key=lambda item: order.get(item[0], len(order))))
    return out


def from_flat(cls, **values):
    """Build a config from flat names (as the command line and stores spell them); a family's
    options go to the options object of the model's family. An unknown name is an error, never
    ignored, and so is another family's option (given a value other than the one stores record
    for a family without it)."""
    own = {f.name: f for f in dataclasses.fields(cls)}
    parts = {name: PARTS[name] for name in own if name in PARTS}
    family = next((name for name, f in own.items() if f.metadata.get("family")), None)
    options = None
    if family is not None and family not in values:
        options = _family_options(values.get("model", own["model"].default))
    option_names = {f.name for f in dataclasses.fields(options)} if options else set()
    unset = getattr(cls, "RECORDED_UNSET", {})
    part_names = {f.name for part in parts.values() for f in dataclasses.fields(part)}
    unknown = sorted(set(values) - (set(own) - set(parts)) - part_names - option_names - set(unset))
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
    stray = [k for k in unset if k in values and k not in option_names and values[k] != unset[k]]
    if stray:
        model = values.get("model", own["model"].default)
        raise ValueError(
            f"model {model} has no option {', '.join(stray)}; its family's options: "
            f"{', '.join(sorted(option_names)) or 'none'}"
        )
    kwargs = {k: v for k, v in values.items() if k in own and k not in parts}
    for name, part in parts.items():
        given = {f.name: values[f.name] for f in dataclasses.fields(part) if f.name in values}
        default = own[name].default
        if default is dataclasses.MISSING:
            kwargs[name] = part(**given)
        else:
            kwargs[name] = dataclasses.replace(default, **given)
    if options is not None:
        kwargs[family] = options(**{k: v for k, v in values.items() if k in option_names})
    return cls(**kwargs)


# autocast dtypes of a forward (extract.models.precision maps them to torch dtypes)
FORWARD_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ExtractConfig:
    """Everything an extraction run needs: where it writes (`store`), which images
    (`selection`), the model and its family's own options (`options`, e.g.
    extract.models.adm_options.AdmOptions; left out: the family's defaults) and how images become
    features. Options named in `_NOT_IN_KEY` change speed, not values; every other option is
    part of the store's key. Build one from the flat option names with
    `from_flat(ExtractConfig, ...)`."""

    store: StoreOptions
    selection: DataSelection = DataSelection()
    model: str = option(
        "demo-fmnist",
        "model preset (ADM, SD/DiT/SDXL latent diffusion), 'diffusers' (any local diffusers folder, "
        "--model-dir), a torchvision backbone (see `backbone --help`), or timm:NAME (any timm model, "
        "local weights)",
    )
    options: Any = option(None, family=True, cli=False)
    ckpt: Path | None = option(
        None,
        "state_dict file (e.g. 256x256_diffusion_uncond.pt; for SD/DiT the denoiser's .safetensors, e.g. "
        "a CleanDIFT U-Net) [default: the preset's shipped weights, if any]",
        flags=("--ckpt", "--weights"),
    )
    random_init: bool = option(False, "random-weight control instead of --ckpt")
    aug: str = option(
        "none",
        "view v of each image is seeded: gd-crop-flip as diffssl's training loader (short side to "
        "[S, S/0.8], random S crop, flip); crop-flip (0.8-1.0 of the short side, flip); training splits",
    )
    ts: tuple[int, ...] = option(
        (150,), "timesteps of the features to cache, repeated or comma-separated", flags=("-t", "--t")
    )
    log_snr: tuple[float, ...] = option(
        (),
        "choose the timesteps by noise level instead of -t: the t nearest each log-SNR in the model's "
        "own schedule (`extract schedule --model NAME` prints it)",
    )
    blocks: tuple[int | str, ...] = option(
        (),
        "blocks of the features to cache (1..2L+1), or 'all', or module paths (diffusers models, e.g. "
        "down_blocks.2.resnets.1) [default: the preset's block, b=24 on ADM-256]",
        flags=("-b", "--block", "--b"),
    )
    pools: tuple[int | None, ...] = option(
        (2,), "pool sizes p (p x p), or 'full' for the whole map", flags=("--pool",)
    )
    block_pools: tuple[str, ...] = option(
        (),
        "block B's own pools instead of --pool, e.g. 30:16 (b=30 pooled to 16x16) or 19:full,2 (repeat); "
        "maxN: pooled to N x N where the map is larger",
        flags=("--block-pool",),
        metavar="B:P",
    )
    views: int = option(1, "independent noise draws (and, with --aug, crops) per image", min=1)
    seed: int = option(0, "draws the subset, the noise, the views and the random-init weights")
    dtype: str = option("fp32", "autocast dtype of the forward", choices=FORWARD_DTYPES)
    store_dtype: str = option("float16", "dtype of cached features")
    micro_batch: int = option(
        16, "images per forward; part of the cache key (kernels round by batch shape)", min=1
    )
    skip_bad: bool = option(False, "skip unreadable images (NaN rows, listed in attrs)")
    skip_small_maps: bool = option(
        False,
        "leave out (b, pool) pairs whose pool is larger than the block's map, instead of refusing "
        "(e.g. -b all --pool 1,2,4)",
    )
    batch_size: int = option(
        64,
        "images per loader step (rounded up to a multiple of --micro-batch); does not change results",
        min=1,
    )
    workers: int = option(0, "DataLoader workers", min=0)
    device: str | None = option(None, "cpu, cuda, cuda:1 ... [default: cuda if available]")

    # The order stores record a run's config in, and the family options they record for a family
    # without them: stores made when one config held every family's options name them all, so
    # every store still does, and keeps the attrs and key it had.
    RECORD_ORDER: ClassVar[tuple[str, ...]] = (
        *StoreOptions.__dataclass_fields__,
        *DataSelection.__dataclass_fields__,
        "model",
        "model_flags",
        "ckpt",
        "random_init",
        "aug",
        "ts",
        "blocks",
        "pools",
        "block_pools",
        "views",
        "seed",
        "dtype",
        "store_dtype",
        "class_label",
        "prompt",
        "model_dir",
        "cond",
        "latents",
        "micro_batch",
        "skip_bad",
        "skip_small_maps",
        "batch_size",
        "workers",
        "device",
    )
    RECORDED_UNSET: ClassVar[dict[str, Any]] = {
        "model_flags": "",
        "class_label": None,
        "prompt": "",
        "model_dir": None,
        "cond": None,
        "latents": None,
    }

    def __post_init__(self):
        expected = _family_options(self.model)
        if self.options is None:
            object.__setattr__(self, "options", expected())
        elif not isinstance(self.options, expected):
            raise ValueError(
                f"model {self.model} takes {expected.__name__}, not {type(self.options).__name__}"
            )


# Not in the key: where things are and how fast they run; which rows (the dataset part of the
# key names them: the files' contents enter through the selection digest, not their paths, and
# a shuffled row order through the dataset part, as for every store kind); --model-flags, in the
# key as the preset it builds (`model`: its dict holds the canonical flag line); --cond, in the
# key by its hash (the conditioning)
_NOT_IN_KEY = {
    "out",
    "log_snr",  # the key holds the timesteps it chose, and their noise levels
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
    "model_flags",
    "cond",
}
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
                f"--block-pool {item!r}: expected B:P[,P] with P a size, full or maxN, "
                f"e.g. 30:16, 19:full or 30:max16{detail}"
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
    given = cfg.options.class_label
    return default if given is None else given


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
