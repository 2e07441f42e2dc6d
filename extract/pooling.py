"""Spatial pooling of block activations: adaptive average to p x p, or the full map."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FULL = "none"  # the spelling of "no pooling" on the command line


def parse_pool(text: str | int | None) -> int | None:
    """'2' -> 2; 'none'/'full' -> None (keep the whole H x W map)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in (FULL, "full")):
        return None
    try:
        p = int(text)
    except ValueError:
        raise ValueError(f"pool must be a positive integer or 'none', got {text!r}") from None
    if p < 1:
        raise ValueError(f"pool must be a positive integer or 'none', got {text!r}")
    return p


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
