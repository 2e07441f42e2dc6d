"""The extraction run: configuration, validation, and the shard loop.

`extract(config)` is the whole stage: check every argument before any work, build or
load the model, create or resume the store, then for each of this rank's unwritten
shards run one early-exit forward per (t, view) and write the pooled features.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from extract import __version__
from extract import blocks as blocks_mod
from extract.augment import AUGMENTATIONS, check_augmentation
from extract.config import DataSelection, StoreOptions, flat
from extract.data import PREPROCESSING, DataError, FeatureInput, ImageSource
from extract.datasets import get_dataset, open_dataset, parse_options
from extract.dist import World, close_world, init_world, pick_device
from extract.models import file_sha256, load_checkpoint, random_unet, shipped_weights
from extract.noise import draw_noise, q_sample
from extract.pooling import pool, pooled_shape
from extract.presets import ModelPreset, get_preset, is_latent
from extract.schema import COMPATIBLE_FIELDS, STORE_DTYPES, FeatureKey, FeatureStore
from extract.writer import StorePlan, write_store
from extract.subsets import Subset, apply_subset, rows_digest

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ExtractConfig:
    """Everything an extraction run needs: where it writes (`store`), which images
    (`selection`) and how they become features. Options named in `_NOT_IN_KEY` change speed,
    not values; every other option is part of the store's key. Build one from the flat
    option names with `extract.config.from_flat(ExtractConfig, ...)`."""

    store: StoreOptions
    selection: DataSelection = DataSelection()
    model: str = "demo-fmnist"
    ckpt: Path | None = None
    random_init: bool = False
    aug: str = "none"  # "crop-flip": view v of image i is a seeded crop + flip (training splits)
    ts: tuple[int, ...] = (150,)
    blocks: tuple[int | str, ...] = ()  # empty: the preset's default block (b=24 on ADM-256); "all": every block
    pools: tuple[int | None, ...] = (2,)
    views: int = 1
    seed: int = 0  # draws the subset, the noise, the views and the random-init weights
    dtype: str = "fp32"  # autocast dtype of the forward
    store_dtype: str = "float16"
    class_label: int | None = None  # the label fed to class-conditional models, every image: default 0 (ADM), the null class 1000 (DiT)
    prompt: str = ""  # SD presets: the prompt every image is paired with (encoded once per run)
    model_dir: Path | None = None  # latent presets: a local diffusers model folder (VAE, text encoder, scheduler, denoiser)
    latents: Path | None = None  # latent presets: the latent cache store [default: latents/<preset>-<hash>.zarr beside --out]
    micro_batch: int = 16  # the forward's batch shape: fixed per store, since kernels round by shape
    skip_bad: bool = False
    skip_small_maps: bool = False  # leave out (b, pool) pairs whose pool exceeds the block's map
    batch_size: int = 64  # images per loader step: any value gives the same bits
    workers: int = 0
    device: str | None = None


# the files' contents enter the key through the dataset's selection digest, not their paths
# (a shuffled row order enters through the dataset part of the key, as for every store kind)
_NOT_IN_KEY = {"out", "ckpt", "model_dir", "latents", "data_root", "batch_size", "workers", "device", "overwrite", "progress", "data_opts", "classes_file", "subset", "order"}
# in the key only when set, so stores made before these options existed keep their key
_KEY_IF_SET = {"per_class": None, "aug": "none", "skip_small_maps": False, "prompt": ""}


@dataclass
class Summary:
    store: Path
    images: int  # images computed by this run (all ranks)
    seconds: float
    bytes: int
    shards_done: int
    shards_total: int
    skipped: list[str] = field(default_factory=list)
    note: str = ""  # what else the run did, e.g. latents encoded or reused

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        return (
            f"{self.store}: {self.images} images in {self.seconds:.1f} s ({self.images_per_s:.1f} images/s), "
            f"{self.shards_done}/{self.shards_total} shards, {self.bytes / 1e6:.1f} MB"
            + (f", {len(self.skipped)} unreadable images skipped" if self.skipped else "")
            + (f"; {self.note}" if self.note else "")
        )


# ---------------------------------------------------------------- validation
ALL_BLOCKS = "all"


def resolve_blocks(cfg: ExtractConfig, preset: ModelPreset) -> tuple[int, ...]:
    """The blocks to extract: as given, every block for "all", or the preset's default block."""
    chosen = cfg.blocks or (preset.default_block,)
    if ALL_BLOCKS in chosen:
        chosen = tuple(range(1, preset.num_blocks + 1))
    for b in chosen:
        if not 1 <= b <= preset.num_blocks:
            raise ValueError(f"block {b} is outside 1..{preset.num_blocks} for model {preset.name}")
    return tuple(sorted(set(chosen)))


def row_shapes(preset: ModelPreset, blocks: tuple[int, ...], ts, pools, skip_small: bool = False, table=None) -> dict[FeatureKey, tuple[int, ...]]:
    """(C, h, w) of one cached row for every (t, b, pool), from the meta-device block table
    (guided-diffusion's, or the given one). A pool larger than a block's map is an error, or
    with skip_small that pair is left out."""
    table = {info.b: info for info in (table or blocks_mod.block_table(preset))}
    shapes = {}
    for b in blocks:
        info = table[b]
        for p in pools:
            try:
                shape = pooled_shape(info.channels, info.height, info.width, p)
            except ValueError as e:
                if skip_small:
                    continue
                raise ValueError(f"block {b}: {e} (--skip-small-maps leaves such pairs out)") from None
            for t in ts:
                shapes[FeatureKey(t, b, p)] = shape
    return shapes


def validate(cfg: ExtractConfig) -> tuple[ModelPreset, tuple[int, ...], dict[FeatureKey, tuple[int, ...]]]:
    """Every argument error, before any model, data or store is touched.
    Returns the preset, the sorted blocks and each key's row shape."""
    preset = get_preset(cfg.model)
    check_run_options(cfg, preset)
    if preset.class_cond and not 0 <= class_label(cfg, preset) < 1000:
        raise ValueError(f"--class-label must be in [0, 1000), got {cfg.class_label}")
    if cfg.prompt or cfg.model_dir is not None or cfg.latents is not None:
        raise ValueError(f"--prompt, --model-dir and --latents are options of latent diffusion presets, not of {preset.name}")
    if cfg.ckpt is None and not cfg.random_init:
        if not preset.shipped:
            raise ValueError("no --ckpt given: pass a checkpoint file, or --random-init for a random-weight control")
        shipped_weights(preset)  # raises when the shipped file is missing
    if cfg.ckpt is not None and cfg.random_init:
        raise ValueError("--ckpt and --random-init exclude each other")
    if cfg.ckpt is not None and not Path(cfg.ckpt).is_file():
        raise FileNotFoundError(f"checkpoint not found: {cfg.ckpt}")
    blocks = resolve_blocks(cfg, preset)
    shapes = row_shapes(preset, blocks, cfg.ts, cfg.pools, cfg.skip_small_maps)  # pool larger than a map fails here
    if not shapes:
        raise ValueError(f"every pool in {list(cfg.pools)} is larger than the maps of blocks {list(blocks)}")
    return preset, blocks, shapes


def class_label(cfg: ExtractConfig, preset) -> int | None:
    """The label class-conditional models get: as given, else 0 (ADM) or the null class (DiT)."""
    if not preset.class_cond:
        return None
    default = getattr(preset, "null_class", None) or 0
    return default if cfg.class_label is None else cfg.class_label


def check_run_options(cfg: ExtractConfig, preset) -> None:
    """The checks every diffusion family shares: timesteps, pools, views, sizes, data, dtypes."""
    if not cfg.ts:
        raise ValueError("give at least one timestep --t")
    for t in cfg.ts:
        if not 0 <= t < preset.diffusion_steps:
            raise ValueError(f"timestep {t} is outside [0, {preset.diffusion_steps}) for model {preset.name}")
    if not cfg.pools:
        raise ValueError("give at least one --pool")
    if cfg.views < 1:
        raise ValueError(f"--views must be at least 1, got {cfg.views}")
    if min(cfg.store.shard_rows, cfg.batch_size, cfg.micro_batch) < 1 or cfg.workers < 0:
        raise ValueError("--shard-rows, --micro-batch and --batch-size must be positive, --workers non-negative")
    if cfg.store.shard_rows % cfg.micro_batch:
        raise ValueError(f"--shard-rows ({cfg.store.shard_rows}) must be a multiple of --micro-batch ({cfg.micro_batch})")
    check_selection(cfg.selection)
    check_augmentation(cfg.aug, cfg.selection.split)
    if cfg.dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(AUTOCAST_DTYPES)}, got {cfg.dtype!r}")
    if cfg.store_dtype not in STORE_DTYPES:
        raise ValueError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}, got {cfg.store_dtype!r}")


# ---------------------------------------------------------------- key and provenance
def store_key(cfg: ExtractConfig, preset: ModelPreset, blocks, weights: dict, dataset: dict, device: torch.device) -> dict:
    """Everything that changes a cached value. Two runs with equal keys write equal bytes."""
    fields = {k: v for k, v in flat(cfg).items() if k not in _NOT_IN_KEY}
    fields = {k: v for k, v in fields.items() if k not in _KEY_IF_SET or v != _KEY_IF_SET[k]}
    fields.update(
        ts=list(cfg.ts), blocks=list(blocks), pools=list(cfg.pools), model=preset.to_dict(),
        class_label=class_label(cfg, preset), weights=weights,
        dataset=dataset,
        preprocessing=PREPROCESSING, device_type=device.type,
    )  # fmt: skip
    return fields


def json_roundtrip(obj):
    """The value as it reads back from Zarr attrs (tuples become lists, paths strings)."""
    import json

    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------- the run
ROW_ORDERS = ("sorted", "shuffled")


def order_rows(rows: np.ndarray, order: str, seed: int) -> np.ndarray:
    """The store's row order. Datasets list images class by class, so a sorted store is
    class-sorted; "shuffled" writes the rows in a seeded permutation, so that any run of
    consecutive rows (what the probe reads at once, and minibatch CKA's batches) mixes the
    classes as an i.i.d. sample would. Features depend on the image's dataset index, never on
    its row, so both orders hold the same values."""
    if order == "sorted":
        return rows
    return rows[np.random.default_rng([seed, 0x0DE12]).permutation(len(rows))]


def check_selection(sel: DataSelection) -> None:
    """Every error in a data selection that needs no file read."""
    if sel.order not in ROW_ORDERS:
        raise ValueError(f"--order must be one of {', '.join(ROW_ORDERS)}, got {sel.order!r}")
    if sel.limit is not None and sel.limit < 1:
        raise ValueError(f"--limit must be positive, got {sel.limit}")
    if sel.per_class is not None and sel.per_class < 1:
        raise ValueError(f"--per-class must be positive, got {sel.per_class}")
    spec = get_dataset(sel.data)
    spec.check_split(sel.split)
    parse_options(spec, sel.data_opts)


def select_data(sel: DataSelection, seed: int) -> tuple[ImageSource, np.ndarray, dict]:
    """(the source, the sorted rows to extract, the dataset part of the store key): the same
    rows for every store kind given the same selection and seed."""
    check_selection(sel)
    spec = get_dataset(sel.data)
    options = parse_options(spec, sel.data_opts)
    source = open_dataset(sel.data, sel.data_root, sel.split, options)
    if len(source) == 0:
        raise DataError(f"{source.location}: the dataset has no images")
    subset = Subset(sel.classes_file, sel.subset, sel.per_class, sel.limit, seed)
    source, rows = apply_subset(source, subset)
    if len(rows) == 0:
        raise DataError(f"{source.location}: the subset selects no images")
    rows = order_rows(rows, sel.order, seed)
    dataset = {"name": source.name, "split": source.split, "fingerprint": source.fingerprint(), "rows": len(rows)}
    if sel.order != "sorted":
        dataset["order"] = f"{sel.order} (seed {seed})"
    if options:
        dataset["options"] = options
    if subset.selective:
        dataset["selection"] = rows_digest(source, rows)
    return source, rows, dataset


def dataset_record(source: ImageSource, rows: np.ndarray, dataset: dict) -> dict:
    """What a store's provenance says of its images: the key's part, where they were, and the
    classes (identifiers, readable names, and how many of the store's rows each holds)."""
    return {**dataset, "location": source.location, "classes": source.classes, "class_names": source.names(),
            "class_counts": source.class_counts(rows)}  # fmt: skip


def load_model(cfg: ExtractConfig, preset: ModelPreset) -> tuple[torch.nn.Module, dict]:
    if cfg.random_init:
        return random_unet(preset, cfg.seed), {"random_init": True, "init_seed": cfg.seed}
    path = Path(cfg.ckpt) if cfg.ckpt is not None else shipped_weights(preset)
    model = load_checkpoint(preset, path)
    return model, {"random_init": False, "checkpoint": path.name, "sha256": file_sha256(path)}


class _ShardBatches(torch.utils.data.Sampler):
    """Batches of dataset indices that never straddle two shards, in shard order.
    batch_size is a multiple of the micro-batch, so micro-batches stay aligned to rows."""

    def __init__(self, shards: list[np.ndarray], batch_size: int):
        self.batches = [s[i : i + batch_size].tolist() for s in shards for i in range(0, len(s), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class AdmForward:
    """How a guided-diffusion U-Net is noised into and read out; latent families have their own
    (extract.latent_run.LatentForward), so the shard loop below serves every family."""

    model: torch.nn.Module
    preset: ModelPreset
    label: int | None  # the class label of class-conditional models, else None

    def noised(self, x0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        return q_sample(self.preset, x0, t, eps)

    def capture(self, x_t: torch.Tensor, steps: torch.Tensor, blocks) -> dict[int, torch.Tensor]:
        y = None if self.label is None else torch.full((x_t.shape[0],), self.label, dtype=torch.long, device=x_t.device)
        return blocks_mod.capture(self.model, x_t, steps, blocks, y=y)


def compute_features(model, preset: ModelPreset, x0: torch.Tensor, indices: list[int], cfg: ExtractConfig, blocks, shapes, device) -> dict[FeatureKey, np.ndarray]:
    """One loader batch: x0 (N, C, S, S), or (N, V, C, S, S) with --aug, in [-1, 1] -> key -> (N, [V,] C, h, w) in the store dtype.

    The model always sees exactly cfg.micro_batch images (the last group zero-padded):
    CPU and GPU kernels pick their blocking, and so their rounding, by shape, so a fixed
    shape is what makes a row's bits independent of how the run was batched."""
    g = cfg.micro_batch
    n = x0.shape[0]
    out = {k: np.empty((n, cfg.views, *s), dtype=np.dtype(cfg.store_dtype)) for k, s in shapes.items()}
    for start in range(0, n, g):
        rows = slice(start, min(start + g, n))
        x = x0[rows]
        if x.shape[0] < g:
            x = torch.cat([x, x.new_zeros((g - x.shape[0], *x.shape[1:]))])
        for key, values in _forward_group(model, preset, x, indices[rows], cfg, blocks, shapes.keys(), device).items():
            out[key][rows] = values[: rows.stop - rows.start]
    return {k: (a if cfg.views > 1 else a[:, 0]) for k, a in out.items()}


def _forward_group(model, preset, x0: torch.Tensor, indices: list[int], cfg, blocks, keys, device) -> dict[FeatureKey, np.ndarray]:
    """x0 (G, [V,] C, S, S), the first len(indices) rows real -> key -> (G, V, C, h, w), for the given keys.
    `model` noises and reads out (AdmForward, LatentForward); x0 is what it noises (pixels, latents)."""
    g = x0.shape[0]
    autocast = AUTOCAST_DTYPES[cfg.dtype]
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
    out: dict[FeatureKey, list] = {}
    for t in cfg.ts:
        steps = torch.full((g,), t, dtype=torch.long, device=device)
        for v in range(cfg.views):
            image_shape = tuple(x0.shape[-3:])
            eps = torch.zeros((g, *image_shape))
            eps[: len(indices)] = draw_noise(image_shape, cfg.seed, indices, t, v)
            x_view = x0[:, v] if x0.dim() == 5 else x0  # augmented: each view its own crop
            x_t = model.noised(x_view, t, eps.to(device, non_blocking=True))
            with torch.inference_mode(), amp:
                feats = model.capture(x_t, steps, blocks)
            for b in blocks:
                h = feats[b].float()
                for p in cfg.pools:
                    if FeatureKey(t, b, p) in keys:
                        out.setdefault(FeatureKey(t, b, p), []).append(pool(h, p).cpu().numpy().astype(cfg.store_dtype))
    return {k: np.stack(v, axis=1) for k, v in out.items()}


# the key fields that define what a U-Net store's features mean (stores probed together agree on them)
UNET_COMPATIBLE = COMPATIBLE_FIELDS


def use_device(device: torch.device) -> torch.device:
    """Make `device` current; on CUDA, the same algorithms for the same shapes on every run
    (cuDNN's benchmark mode picks them by timing, so its rounding would vary)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def extract(cfg: ExtractConfig) -> Summary:
    """Run (or resume) one extraction into cfg.store.out. Collective under torchrun."""
    if is_latent(cfg.model):  # SD and DiT: VAE latents cached in a side store, then the same shard loop
        from extract.latent_run import extract_latent

        return extract_latent(cfg)
    started = time.perf_counter()
    preset, blocks, shapes = validate(cfg)
    device = pick_device(cfg.device)
    world = init_world(device)
    try:
        device = use_device(pick_device(cfg.device, world))
        source, rows, dataset = select_data(cfg.selection, cfg.seed)
        model, weights = load_model(cfg, preset)
        model.requires_grad_(False).to(device)
        key = json_roundtrip(store_key(cfg, preset, blocks, weights, dataset, device))
        provenance = json_roundtrip({
            "diffprobe_version": __version__, "torch_version": torch.__version__,
            "stage": "extract", "kind": "unet", "preset": preset.name, "weights": weights,
            "dataset": {**dataset_record(source, rows, dataset), "aug": cfg.aug},
            "config": {k: v for k, v in flat(cfg).items() if k != "progress"},
        })  # fmt: skip
        plan = StorePlan(out=Path(cfg.store.out), key=key, compatible=UNET_COMPATIBLE, provenance=provenance, row_shapes=shapes,
                         ids=[source.ids[i] for i in rows], labels=source.labels[rows], index=rows, shard_rows=cfg.store.shard_rows,
                         views=cfg.views, dtype=cfg.store_dtype, overwrite=cfg.store.overwrite)  # fmt: skip

        def fill(store: FeatureStore, shards: list[int]) -> int:
            return run_shards(AdmForward(model, preset, class_label(cfg, preset)), preset, source, store, shards, rows, cfg, blocks, shapes, device, world)

        written = write_store(plan, fill, world, started)
        return Summary(written.store, written.images, time.perf_counter() - started, written.bytes, written.shards_done,
                       written.shards_total, written.skipped)  # fmt: skip
    finally:
        close_world(world)


def run_shards(model, preset, source, store: FeatureStore, shards: list[int], rows: np.ndarray, cfg, blocks, shapes, device, world: World,
               inputs: torch.utils.data.Dataset | None = None, compute=compute_features, workers: int | None = None) -> int:  # fmt: skip
    """Compute and write the given shards; returns the number of images computed.

    `inputs` yields (dataset index, input, error) [default: the images, preprocessed];
    `compute(model, preset, inputs (N, ...), indices, cfg, blocks, shapes, device)` turns a
    batch into key -> (N, [V,] ...) rows [default: noise, forward, pool]."""
    shard_indices = [rows[store.shard_rows(s).start : store.shard_rows(s).stop] for s in shards]
    total = int(sum(len(s) for s in shard_indices))
    if total == 0:
        return 0
    if inputs is None:
        inputs = FeatureInput(source, preset.image_size, preset.in_channels, AUGMENTATIONS[cfg.aug], cfg.views, cfg.seed)
    loader = torch.utils.data.DataLoader(
        inputs,
        batch_sampler=_ShardBatches(shard_indices, -(-cfg.batch_size // cfg.micro_batch) * cfg.micro_batch),
        num_workers=cfg.workers if workers is None else workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    bar = tqdm(total=total, unit="img", desc=f"extract rank {world.rank}" if world.size > 1 else "extract", disable=not cfg.store.progress, dynamic_ncols=True)
    batches = iter(loader)
    with bar:
        for s in shards:
            span = store.shard_rows(s)
            view_axis = (cfg.views,) if cfg.views > 1 else ()
            buffers = {k: np.empty((len(span), *view_axis, *shape), dtype=cfg.store_dtype) for k, shape in shapes.items()}
            valid = np.ones(len(span), dtype=bool)
            filled = 0
            while filled < len(span):
                indices, x0, errors = next(batches)
                indices = indices.tolist()
                bad = [j for j, e in enumerate(errors) if e]
                if bad and not cfg.skip_bad:
                    raise DataError(errors[bad[0]] + " (use --skip-bad to skip unreadable images)")
                feats = compute(model, preset, x0.to(device, non_blocking=True), indices, cfg, blocks, shapes, device)
                # batches walk the shard's rows in order, never crossing into the next shard
                local = slice(filled, filled + len(indices))
                for k, values in feats.items():
                    values[bad] = np.nan  # a skipped image is never a silent zero row
                    buffers[k][local] = values
                valid[local][bad] = False
                filled += len(indices)
                bar.update(len(indices))
            store.write_shard(s, buffers, valid)
    return total
