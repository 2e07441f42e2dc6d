"""Fréchet distance and precision/recall between the features of two stores at one key.

Any store works: a U-Net's (t, b, pool), a backbone's block, raw pixels. Statistics stream
shard by shard in float64; precision/recall uses a seeded sample of at most `pr_rows` rows of
each store (its cost is quadratic in n). Views beyond the first are not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.frechet import GaussianStats, frechet_from_stats, precision_recall
from extract.store import progress
from extract.store.overlap import check_overlap
from extract.store.schema import FeatureKey, FeatureStore, StoreError, open_complete


@dataclass
class StoreDistance:
    key: str
    fd: float
    precision: float
    recall: float
    rows: tuple[int, int]
    pr_rows: tuple[int, int]
    stores: tuple[str, str]
    overlap: dict | None = None  # the check for images held by both stores

    def line(self) -> str:
        shared = (self.overlap or {}).get("shared", 0)
        return (
            f"{self.key}: Fréchet distance {self.fd:.4f}, "
            f"precision {self.precision:.3f}, recall {self.recall:.3f} "
            f"({self.rows[0]} vs {self.rows[1]} rows; "
            f"precision/recall on {self.pr_rows[0]} vs {self.pr_rows[1]})"
            + (f"; {shared} images in both stores" if shared else "")
        )


def store_stats(
    store: FeatureStore, key: FeatureKey, pr_rows: int, seed: int
) -> tuple[GaussianStats, np.ndarray]:
    """Statistics of every valid row of one key, and a seeded sample of at most pr_rows of
    them for precision/recall; one pass, shard by shard (first view only)."""
    array, valid = store.array(key), store.valid()
    usable = np.flatnonzero(valid)
    picked = np.zeros(store.n_rows, bool)
    picked[np.random.default_rng(seed).permutation(usable)[:pr_rows]] = True
    stats, sample = GaussianStats(), []
    for s in range(store.n_shards):
        span = store.shard_rows(s)
        x = array[span.start : span.stop]
        x = np.asarray(x[:, 0] if store.views > 1 else x, dtype=np.float64).reshape(len(x), -1)
        stats.add(x[valid[span.start : span.stop]])
        sample.append(x[picked[span.start : span.stop]])
    if stats.n < 2:
        raise StoreError(f"{store.path} has fewer than 2 valid rows")
    return stats, np.concatenate(sample)


def store_rows(store: FeatureStore, key: FeatureKey) -> np.ndarray:
    """Every valid row of one key (first view), flattened, float32: (n, d). For metrics that need
    the rows themselves (the kernel distance, the Inception Score), not only their moments."""
    array, valid = store.array(key), store.valid()
    out = []
    for s in range(store.n_shards):
        span = store.shard_rows(s)
        x = array[span.start : span.stop]
        x = np.asarray(x[:, 0] if store.views > 1 else x, dtype=np.float32).reshape(len(x), -1)
        out.append(x[valid[span.start : span.stop]])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def store_distance(
    a: str | Path,
    b: str | Path,
    key: FeatureKey | None = None,
    *,
    k: int = 3,
    pr_rows: int = 5000,
    seed: int = 0,
    allow_overlap: bool = False,
) -> StoreDistance:
    """Fréchet distance and precision/recall of store b's features against store a's (the reference).
    Stores that hold the same images (by pixel digest) are refused unless `allow_overlap`: the
    distance between two sets sharing images is biased low."""
    sa, sb = open_complete(a), open_complete(b)
    overlap = check_overlap(sa, sb, allow_overlap)
    if overlap.shared:
        progress.warn(overlap.line)
    if key is None:
        common = sorted(set(sa.keys()) & set(sb.keys()), key=FeatureKey.sort_key)
        if len(common) != 1:
            shared = ", ".join(x.label for x in common) or "none"
            raise StoreError(f"{a} and {b} share {len(common)} keys ({shared}); give one with --key")
        key = common[0]
    (st_a, x_a), (st_b, x_b) = store_stats(sa, key, pr_rows, seed), store_stats(sb, key, pr_rows, seed)
    precision, recall = precision_recall(x_a, x_b, k=k)
    return StoreDistance(
        key.label,
        frechet_from_stats(st_a, st_b),
        precision,
        recall,
        (st_a.n, st_b.n),
        (len(x_a), len(x_b)),
        (str(a), str(b)),
        overlap.record(),
    )
