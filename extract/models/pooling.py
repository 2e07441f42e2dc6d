"""Spatial pooling of block activations: adaptive average to p x p, or the full map.
(How a pool is spelled and parsed is the schema's: extract.store.schema.parse_pool.)"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pooled_shape(channels: int, height: int, width: int, p: int | None) -> tuple[int, int, int]:
    """(C, p, p) or (C, H, W); p larger than the map is an error."""
    if p is None:
        return channels, height, width
    if p > min(height, width):
        raise ValueError(f"pool {p} is larger than the block's {height}x{width} map")
    return channels, p, p


def pool(features: torch.Tensor, p: int | None) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, p, p) by adaptive average pooling; p=None returns the input."""
    if p is None:
        return features
    pooled_shape(*features.shape[1:], p)
    return F.adaptive_avg_pool2d(features, p)
