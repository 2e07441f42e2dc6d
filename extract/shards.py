"""The shard loop every diffusion family runs: batches that never straddle a shard, one
forward per batch through the job's `compute`, whole shards written at once.

A family hands the loop a `Forward` (how its network is noised into and read out) inside a
`ShardJob`; `compute_features`, the default `compute`, noises, runs to the deepest requested
block and pools, the same way for every family."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch

from extract.data.augment import AUGMENTATIONS
from extract.data.sources import DataError, FeatureInput, ImageSource
from extract.models.noise import draw_noise
from extract.models.pooling import pool
from extract.models.precision import AUTOCAST_DTYPES
from extract.store import progress
from extract.store.config import ExtractConfig
from extract.store.dist import ProcessGroup
from extract.store.schema import CONTENT_BYTES, FeatureKey, FeatureStore


@runtime_checkable
class Forward(Protocol):
    """How a family's network is noised into and read out (ADM's U-Net, a latent denoiser)."""

    def noised(self, x0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """x0 (G, C, S, S) -> x_t (G, C, S, S): the forward process at step t with noise eps."""
        ...

    def capture(self, x_t: torch.Tensor, steps: torch.Tensor, blocks) -> dict[int, torch.Tensor]:
        """x_t (G, C, S, S), steps (G,) -> block b -> its output map (G, C_b, h_b, w_b), for
        each requested b, stopping after the deepest."""
        ...


@dataclass(frozen=True)
class Batch:
    """One loader batch on the job's device: what a `compute` turns into rows."""

    job: ShardJob
    x0: torch.Tensor  # (N, C, S, S), or (N, V, C, S, S) with views
    indices: list[int]  # the dataset index of each row (its noise seed)


def image_inputs(source: ImageSource, preset, cfg: ExtractConfig) -> FeatureInput:
    """The images, preprocessed for the preset (and cropped into cfg.views views with --aug)."""
    return FeatureInput(
        source, preset.image_size, preset.in_channels, AUGMENTATIONS[cfg.aug], cfg.views, cfg.seed
    )


def compute_features(batch: Batch) -> dict[FeatureKey, np.ndarray]:
    """One loader batch: x0 (N, C, S, S), or (N, V, C, S, S) with --aug, in [-1, 1]
    -> key -> (N, [V,] C, h, w) in the store dtype.

    The model always sees exactly cfg.micro_batch images (the last group zero-padded):
    CPU and GPU kernels pick their blocking, and so their rounding, by shape, so a fixed
    shape is what makes a row's bits independent of how the run was batched."""
    cfg, x0 = batch.job.cfg, batch.x0
    g, n = cfg.micro_batch, x0.shape[0]
    dtype = np.dtype(cfg.store_dtype)
    out = {k: np.empty((n, cfg.views, *s), dtype=dtype) for k, s in batch.job.shapes.items()}
    for start in range(0, n, g):
        rows = slice(start, min(start + g, n))
        x = x0[rows]
        if x.shape[0] < g:
            x = torch.cat([x, x.new_zeros((g - x.shape[0], *x.shape[1:]))])
        for key, values in _forward_group(batch.job, x, batch.indices[rows]).items():
            out[key][rows] = values[: rows.stop - rows.start]
    return {k: (a if cfg.views > 1 else a[:, 0]) for k, a in out.items()}


def _forward_group(job: ShardJob, x0: torch.Tensor, indices: list[int]) -> dict[FeatureKey, np.ndarray]:
    """x0 (G, [V,] C, S, S), the first len(indices) rows real -> key -> (G, V, C, h, w), for the
    job's keys. x0 is what job.forward noises (pixels, latents)."""
    cfg, device, blocks = job.cfg, job.device, job.blocks
    g = x0.shape[0]
    autocast = AUTOCAST_DTYPES[cfg.dtype]
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
    out: dict[FeatureKey, list] = {}
    # each block's pools, resolved
    wanted = {(t, b): [k for k in job.shapes if (k.t, k.b) == (t, b)] for t in cfg.ts for b in blocks}
    for t in cfg.ts:
        steps = torch.full((g,), t, dtype=torch.long, device=device)
        for v in range(cfg.views):
            image_shape = tuple(x0.shape[-3:])
            eps = torch.zeros((g, *image_shape))
            eps[: len(indices)] = draw_noise(image_shape, cfg.seed, indices, t, v)
            x_view = x0[:, v] if x0.dim() == 5 else x0  # augmented: each view its own crop
            x_t = job.forward.noised(x_view, t, eps.to(device, non_blocking=True))
            with torch.inference_mode(), amp:
                feats = job.forward.capture(x_t, steps, blocks)
            for b in blocks:
                h = feats[b].float()
                for key in wanted[(t, b)]:
                    out.setdefault(key, []).append(pool(h, key.pool).cpu().numpy().astype(cfg.store_dtype))
    return {k: np.stack(v, axis=1) for k, v in out.items()}


@dataclass(frozen=True)
class ShardJob:
    """Everything one store's shards are computed from, fixed for the run; the store writer
    hands the store and the shards to fill (`functools.partial(run_shards, job)` is its fill)."""

    forward: Forward
    # (dataset index, input ([V,] C, S, S), error text or "", pixel digest (16,) uint8) by index
    inputs: torch.utils.data.Dataset
    rows: np.ndarray  # the dataset index of each store row
    cfg: ExtractConfig  # ts, views, seed, micro-batch, batch size, dtypes, workers, skip-bad, progress
    blocks: tuple[int, ...]
    shapes: dict[FeatureKey, tuple[int, ...]]  # each key's row shape (C, h, w): the keys and pools
    device: torch.device
    world: ProcessGroup
    # one batch -> key -> (N, [V,] ...) rows in the store dtype
    compute: Callable[[Batch], dict[FeatureKey, np.ndarray]] = compute_features
    workers: int | None = None  # loader workers; None: cfg.workers


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
            f"{self.store}: {self.images} images in {self.seconds:.1f} s"
            f" ({self.images_per_s:.1f} images/s), "
            f"{self.shards_done}/{self.shards_total} shards, {self.bytes / 1e6:.1f} MB"
            + (f", {len(self.skipped)} unreadable images skipped" if self.skipped else "")
            + (f"; {self.note}" if self.note else "")
        )


class _ShardBatches(torch.utils.data.Sampler):
    """Batches of dataset indices that never straddle two shards, in shard order.
    batch_size is a multiple of the micro-batch, so micro-batches stay aligned to rows."""

    def __init__(self, shards: list[np.ndarray], batch_size: int):
        self.batches = [s[i : i + batch_size].tolist() for s in shards for i in range(0, len(s), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def run_shards(job: ShardJob, store: FeatureStore, shards: list[int]) -> int:
    """Compute and write the given shards of the store; returns the number of images computed.
    Each batch goes through `job.compute` (key -> (N, [V,] ...) rows)."""
    cfg, rows = job.cfg, job.rows
    shard_indices = [rows[store.shard_rows(s).start : store.shard_rows(s).stop] for s in shards]
    total = int(sum(len(s) for s in shard_indices))
    if total == 0:
        return 0
    loader = torch.utils.data.DataLoader(
        job.inputs,
        batch_sampler=_ShardBatches(shard_indices, -(-cfg.batch_size // cfg.micro_batch) * cfg.micro_batch),
        num_workers=cfg.workers if job.workers is None else job.workers,
        pin_memory=job.device.type == "cuda",
        persistent_workers=False,
    )
    desc = f"extract rank {job.world.rank}" if job.world.size > 1 else "extract"
    bar, lines = (
        progress.bar(cfg.store.progress, total=total, unit="img", desc=desc),
        progress.Lines(cfg.store.progress, desc, total, "img"),
    )
    batches = iter(loader)
    with bar:
        for s in shards:
            span = store.shard_rows(s)
            view_axis = (cfg.views,) if cfg.views > 1 else ()
            buffers = {
                k: np.empty((len(span), *view_axis, *shape), dtype=cfg.store_dtype)
                for k, shape in job.shapes.items()
            }
            valid = np.ones(len(span), dtype=bool)
            content = np.zeros((len(span), CONTENT_BYTES), dtype=np.uint8)
            filled = 0
            while filled < len(span):
                indices, x0, errors, digests = next(batches)
                indices = indices.tolist()
                bad = [j for j, e in enumerate(errors) if e]
                if bad and not cfg.skip_bad:
                    raise DataError(errors[bad[0]] + " (use --skip-bad to skip unreadable images)")
                feats = job.compute(Batch(job, x0.to(job.device, non_blocking=True), indices))
                # batches walk the shard's rows in order, never crossing into the next shard
                local = slice(filled, filled + len(indices))
                for k, values in feats.items():
                    values[bad] = np.nan  # a skipped image is never a silent zero row
                    buffers[k][local] = values
                valid[local][bad] = False
                content[local] = digests.numpy()
                filled += len(indices)
                bar.update(len(indices))
            store.write_shard(s, buffers, valid, content)
            lines.add(len(span), f"shard {s}")
    return total
