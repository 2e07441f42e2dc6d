"""Fréchet distance and precision/recall between two sets of features (pure numpy, no I/O).

Used with any feature space: Inception for the standard FID, a classifier trained on the data
for small grayscale sets, a diffprobe store's (t, b, pool). Statistics are accumulated in
float64 batch by batch, so n can be in the millions while memory stays O(d^2).

- Fréchet distance (Dowson and Landau, 1982; FID, Heusel et al., 2017) between Gaussians fitted
  to the two sets: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with the unbiased
  covariance (divisor n - 1) as the public FID code uses.
- precision and recall (Kynkäänniemi et al., 2019): each sample's k-NN radius within its own
  set; precision is the share of generated samples inside some real sample's ball, recall the
  share of real samples inside some generated sample's ball (k = 3 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GaussianStats:
    """Streaming mean and covariance: add batches (n, d), read `mean` and `cov`."""

    n: int = 0
    total: np.ndarray | None = None  # (d,) float64
    outer: np.ndarray | None = None  # (d, d) float64

    def add(self, x: np.ndarray) -> GaussianStats:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if self.total is None:
            self.total, self.outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        if x.shape[1] != len(self.total):
            raise ValueError(f"features of {x.shape[1]} dimensions added to statistics of {len(self.total)}")
        self.n += len(x)
        self.total += x.sum(0)
        self.outer += x.T @ x
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.n

    @property
    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError("a covariance needs at least 2 samples")
        mu = self.mean
        return (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) is computed as tr((A S_b A)^(1/2)) with A = S_a^(1/2): the same
    eigenvalues, but a symmetric matrix, so no complex parts or sqrtm iterations."""
    root = _sqrt_psd(cov_a)
    middle = np.linalg.eigvalsh(root @ cov_b @ root)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def frechet_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def _kth_radius(x: np.ndarray, k: int, block: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row."""
    sq = (x**2).sum(1)
    out = np.empty(len(x))
    for s in range(0, len(x), block):
        d = sq[s : s + block, None] + sq[None, :] - 2 * x[s : s + block] @ x.T
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf  # not its own neighbour
        out[s : s + block] = np.sqrt(np.clip(np.partition(d, k - 1, axis=1)[:, k - 1], 0, None))
    return out


def _inside_any(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, block: int) -> np.ndarray:
    sq_c = (centres**2).sum(1)
    hit = np.zeros(len(points), bool)
    for s in range(0, len(points), block):
        p = points[s : s + block]
        d = np.sqrt(np.clip((p**2).sum(1)[:, None] + sq_c[None, :] - 2 * p @ centres.T, 0, None))
        hit[s : s + block] = (d <= radii[None, :]).any(1)
    return hit


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, block: int = 1024
) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall of `fake` against `real` (n, d)."""
    real = np.asarray(real, dtype=np.float64).reshape(len(real), -1)
    fake = np.asarray(fake, dtype=np.float64).reshape(len(fake), -1)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision and recall with k={k} need more than {k} samples in each set")
    precision = _inside_any(fake, real, _kth_radius(real, k, block), block).mean()
    recall = _inside_any(real, fake, _kth_radius(fake, k, block), block).mean()
    return float(precision), float(recall)
