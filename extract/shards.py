"""The shard loop every diffusion family runs: batches that never straddle a shard, one
forward per batch through the family's `compute`, whole shards written at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from extract.data.augment import AUGMENTATIONS
from extract.data.sources import DataError, FeatureInput
from extract.models.adm_forward import compute_features
from extract.store import progress
from extract.store.dist import World
from extract.store.schema import CONTENT_BYTES, FeatureStore


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


class _ShardBatches(torch.utils.data.Sampler):
    """Batches of dataset indices that never straddle two shards, in shard order.
    batch_size is a multiple of the micro-batch, so micro-batches stay aligned to rows."""

    def __init__(self, shards: list[np.ndarray], batch_size: int):
        self.batches = [s[i : i + batch_size].tolist() for s in shards for i in range(0, len(s), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def use_device(device: torch.device) -> torch.device:
    """Make `device` current; on CUDA, the same algorithms for the same shapes on every run
    (cuDNN's benchmark mode picks them by timing, so its rounding would vary)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def run_shards(
    model,
    preset,
    source,
    store: FeatureStore,
    shards: list[int],
    rows: np.ndarray,
    cfg,
    blocks,
    shapes,
    device,
    world: World,
    inputs: torch.utils.data.Dataset | None = None,
    compute=compute_features,
    workers: int | None = None,
) -> int:
    """Compute and write the given shards; returns the number of images computed.

    `inputs` yields (dataset index, input, error, pixel digest) [default: the images, preprocessed];
    `compute(model, preset, inputs (N, ...), indices, cfg, blocks, shapes, device)` turns a
    batch into key -> (N, [V,] ...) rows [default: noise, forward, pool]."""
    shard_indices = [rows[store.shard_rows(s).start : store.shard_rows(s).stop] for s in shards]
    total = int(sum(len(s) for s in shard_indices))
    if total == 0:
        return 0
    if inputs is None:
        inputs = FeatureInput(
            source, preset.image_size, preset.in_channels, AUGMENTATIONS[cfg.aug], cfg.views, cfg.seed
        )
    loader = torch.utils.data.DataLoader(
        inputs,
        batch_sampler=_ShardBatches(shard_indices, -(-cfg.batch_size // cfg.micro_batch) * cfg.micro_batch),
        num_workers=cfg.workers if workers is None else workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    desc = f"extract rank {world.rank}" if world.size > 1 else "extract"
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
                for k, shape in shapes.items()
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
                feats = compute(
                    model, preset, x0.to(device, non_blocking=True), indices, cfg, blocks, shapes, device
                )
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
