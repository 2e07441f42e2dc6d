"""What the families that run an image network once per image share (backbones, the BiGAN
encoder): block outputs by forward hooks, and the shard loop that pools them into a store with
each image's pixel digest."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from extract.data.sources import DataError, FeatureInput
from extract.models.pooling import pool
from extract.store import progress
from extract.store.schema import CONTENT_BYTES, FeatureKey, FeatureStore


def capture(
    model: torch.nn.Module,
    blocks: list[torch.nn.Module],
    x: torch.Tensor,
    wanted,
    to_map: Callable[[torch.Tensor], torch.Tensor],
) -> dict[int, torch.Tensor]:
    """Outputs of the wanted blocks (1-based) as (N, C, H, W) maps (`to_map` lays one out),
    by forward hooks."""
    out: dict[int, torch.Tensor] = {}
    handles = [
        blocks[b - 1].register_forward_hook(lambda m, i, o, b=b: out.__setitem__(b, to_map(o)))
        for b in wanted
    ]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def fixed_batches(
    maps_of: Callable[[torch.Tensor], dict[int, torch.Tensor]], x: torch.Tensor, micro_batch: int
) -> dict[int, torch.Tensor]:
    """`maps_of` over x (N, C, S, S) in groups of exactly `micro_batch` images, the last one padded
    with zeros and its padding dropped: a row's values then never depend on how many images were
    loaded together (a kernel may be chosen by batch size), so stores are bit-identical whatever
    --batch-size. The networks run in eval mode, where one image's output does not depend on the
    others in its group."""
    parts: dict[int, list[torch.Tensor]] = {}
    for a in range(0, len(x), micro_batch):
        group = x[a : a + micro_batch]
        n = len(group)
        if n < micro_batch:
            group = torch.cat([group, group.new_zeros((micro_batch - n, *group.shape[1:]))])
        for b, m in maps_of(group).items():
            parts.setdefault(b, []).append(m[:n])
    return {b: torch.cat(ms) for b, ms in parts.items()}


def network_fill(
    images: FeatureInput,
    rows: np.ndarray,
    shapes: dict[FeatureKey, tuple[int, ...]],
    maps_of: Callable[[torch.Tensor], dict[int, torch.Tensor]],
    batch_size: int,
    device: torch.device,
    show: bool,
    desc: str,
    micro_batch: int,
) -> Callable[[FeatureStore, list[int]], int]:
    """The writer's `fill` for such a family: images (N, C, S, S) in [-1, 1] -> `maps_of`, run on
    fixed groups of `micro_batch` images (`fixed_batches`) -> each key's block pooled, float16,
    with every row's pixel digest; an unreadable image stops the run."""

    def fill(store: FeatureStore, shards: list[int]) -> int:
        total = sum(len(store.shard_rows(s)) for s in shards)
        lines = progress.Lines(show, desc, total, "img")
        with progress.bar(show, total=total, unit="img", desc=desc) as bar:
            for s in shards:
                span = store.shard_rows(s)
                shard = {k: np.empty((len(span), *shape), np.float16) for k, shape in shapes.items()}
                content = np.zeros((len(span), CONTENT_BYTES), np.uint8)
                for a in range(span.start, span.stop, batch_size):
                    items = [images[int(i)] for i in rows[a : min(a + batch_size, span.stop)]]
                    bad = next((e for _, _, e, _ in items if e), "")
                    if bad:
                        raise DataError(bad)
                    local = slice(a - span.start, a - span.start + len(items))
                    content[local] = np.stack([d.numpy() for *_, d in items])
                    maps = fixed_batches(
                        maps_of, torch.stack([t for _, t, _, _ in items]).to(device), micro_batch
                    )
                    for k in shapes:
                        shard[k][local] = pool(maps[k.b].float(), k.pool).cpu().numpy()
                    bar.update(len(items))
                store.write_shard(s, shard, np.ones(len(span), bool), content)
                lines.add(len(span), f"shard {s}")
        return total

    return fill
