"""A side of an FID comparison (its feature statistics and what made them), and the reference
statistics files that keep one: `mu` and `sigma`, as the public FID code writes them, with the
key of what made them and the rows for precision and recall."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATS_FORMAT = "diffprobe-fid-stats-1"


@dataclass
class Side:
    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    sample: np.ndarray | None  # feature rows for precision/recall
    record: dict  # what the images were
    features: dict | None  # what made the features (None: external statistics)
    store: str | None = None


def save_stats(path: Path, side: Side) -> None:
    """mu and sigma (the public FID code's names) with what made them and the precision/recall rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = {"format": STATS_FORMAT, "images": side.record, "features": side.features}
    tmp = path.with_name(path.name + ".tmp")
    rows = side.sample if side.sample is not None else np.zeros((0, len(side.mu)))
    with open(tmp, "wb") as f:
        np.savez(
            f,
            mu=side.mu,
            sigma=side.sigma,
            n=np.int64(side.n or 0),
            key=np.array(json.dumps(key, sort_keys=True)),
            pr_features=rows.astype(np.float32),
        )
    os.replace(tmp, path)  # written whole or not at all


def load_stats(path: Path) -> tuple[dict | None, Side]:
    """(the key stored in the file, or None for external statistics, and the statistics)."""
    try:
        z = np.load(path, allow_pickle=False)
        if "mu" not in z or "sigma" not in z:
            raise ValueError(f"{path}: no 'mu' and 'sigma' arrays (found {', '.join(z.files) or 'none'})")
        mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
        key = json.loads(str(z["key"])) if "key" in z else None
        sample = (
            np.asarray(z["pr_features"], np.float64) if "pr_features" in z and len(z["pr_features"]) else None
        )
        n = int(z["n"]) if "n" in z else None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable statistics file ({e})") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    record = (
        {**key["images"], "statistics": str(path)}
        if key
        else {"kind": "statistics", "path": str(path), "external": True}
    )
    return key, Side(mu, sigma, n, sample, record, key["features"] if key else None)
