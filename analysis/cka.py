"""Linear CKA (Kornblith et al., 2019): pure functions, no I/O.

Two ways to the same number:
- `linear_cka_gram(X, Y)`: the definition, HSIC of the n x n Gram matrices
  (tr(K H L H)), O(n^2) memory; the reference.
- `CrossMoments` + `linear_cka_from_moments`: feature-space statistics summed over rows
  (sums and the Gram matrix Z^T Z of all features side by side), O(d^2) memory and exact
  for any number of rows, so a store larger than memory streams through it.
With centred X and Y, HSIC_lin(X, Y) is proportional to ||X^T Y||_F^2, and
CKA = ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F).
"""

from __future__ import annotations

import numpy as np


def center_gram(k: np.ndarray) -> np.ndarray:
    """H K H with H = I - 11^T/n."""
    k = k - k.mean(axis=0, keepdims=True)
    return k - k.mean(axis=1, keepdims=True)


def hsic_gram(k: np.ndarray, l: np.ndarray) -> float:
    """The biased HSIC estimator tr(K H L H) / (n - 1)^2."""
    n = k.shape[0]
    return float(np.sum(center_gram(k) * center_gram(l))) / (n - 1) ** 2


def linear_cka_gram(x: np.ndarray, y: np.ndarray) -> float:
    """CKA of x (n, p) and y (n, q) with linear kernels, from n x n Gram matrices."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k, l = x @ x.T, y @ y.T
    return hsic_gram(k, l) / np.sqrt(hsic_gram(k, k) * hsic_gram(l, l))


class CrossMoments:
    """Running sums over rows of several feature blocks side by side: n, sum z, Z^T Z.

    dims: the width of each block; `add(blocks)` takes one (rows, d_i) array per block."""

    def __init__(self, dims: list[int]):
        self.dims = list(dims)
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)])
        total = int(self.offsets[-1])
        self.n = 0
        self.sum = np.zeros(total)
        self.gram = np.zeros((total, total))

    def add(self, blocks: list[np.ndarray]) -> None:
        if [b.shape[1] for b in blocks] != self.dims:
            raise ValueError(f"expected blocks of widths {self.dims}, got {[b.shape[1] for b in blocks]}")
        z = np.concatenate([np.asarray(b, np.float64) for b in blocks], axis=1)
        self.n += z.shape[0]
        self.sum += z.sum(axis=0)
        self.gram += z.T @ z

    def centred_cross(self, i: int, j: int) -> np.ndarray:
        """X_i^T X_j of the centred blocks i and j: (d_i, d_j)."""
        a = slice(self.offsets[i], self.offsets[i + 1])
        b = slice(self.offsets[j], self.offsets[j + 1])
        return self.gram[a, b] - np.outer(self.sum[a], self.sum[b]) / self.n


def linear_cka_from_moments(m: CrossMoments, i: int, j: int) -> float:
    """CKA between blocks i and j of the rows added so far (exact, any n)."""
    xy, xx, yy = m.centred_cross(i, j), m.centred_cross(i, i), m.centred_cross(j, j)
    return float(np.sum(xy * xy) / np.sqrt(np.sum(xx * xx) * np.sum(yy * yy)))


# ---------------------------------------------------------------- kernels and unbiased HSIC
def linear_gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x @ x.T


def rbf_gram(x: np.ndarray, bandwidth: float = 0.5) -> np.ndarray:
    """exp(-|xi - xj|^2 / (2 s^2)) with s^2 = bandwidth^2 x the median squared distance
    (Kornblith et al.'s choice), so the kernel ignores the features' overall scale."""
    x = np.asarray(x, np.float64)
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    median = np.median(d2[~np.eye(len(x), dtype=bool)])
    if median <= 0:
        raise ValueError("rbf kernel: all points coincide (median distance 0)")
    return np.exp(-d2 / (2 * bandwidth**2 * median))


def kernel_cka(k: np.ndarray, l: np.ndarray, estimator: str = "biased") -> float:
    """CKA of two n x n kernel matrices: biased HSIC (as in Kornblith et al.) or unbiased
    (Song et al.); NaN where a kernel's self-HSIC is not positive."""
    hsic = hsic_unbiased if estimator == "unbiased" else hsic_gram
    denom = hsic(k, k) * hsic(l, l)
    return float(hsic(k, l) / np.sqrt(denom)) if denom > 0 else float("nan")


def rbf_cka(x: np.ndarray, y: np.ndarray, bandwidth: float = 0.5) -> float:
    return kernel_cka(rbf_gram(x, bandwidth), rbf_gram(y, bandwidth))


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012)'s unbiased HSIC estimator (needs n >= 4); it can be negative."""
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 rows, got {n}")
    k = k - np.diag(np.diag(k))
    l = l - np.diag(np.diag(l))
    kl = k @ l
    value = np.trace(kl) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 * kl.sum() / (n - 2)
    return float(value / (n * (n - 3)))


def hsic_unbiased_centred(g: float, q_a: np.ndarray, q_b: np.ndarray) -> float:
    """The same unbiased HSIC of linear kernels, from centred rows without an n x n matrix:
    g = <Xc Xc^T, Yc Yc^T>; q_a, q_b (n,): the centred rows' squared norms (the kernels'
    diagonals). The estimator does not change when the rows are centred, and with centred rows
    each row of Xc Xc^T sums to 0: the kernel with a zeroed diagonal has row sums -q_a and total
    -sum(q_a), which is all the estimator needs beside g."""
    n = len(q_a)
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 rows, got {n}")
    qq = float(np.dot(q_a, q_b))
    value = (g - qq) + q_a.sum() * q_b.sum() / ((n - 1) * (n - 2)) - 2 * qq / (n - 2)
    return float(value / (n * (n - 3)))


def minibatch_cka(batches) -> float:
    """Nguyen, Raghu and Kornblith (2021): unbiased HSICs summed over minibatches before the
    ratio, so the estimate stays finite where one batch's HSIC is negative.
    batches: iterable of (K, L) kernel matrices of the same rows."""
    kl = kk = ll = 0.0
    for k, l in batches:
        kl += hsic_unbiased(k, l)
        kk += hsic_unbiased(k, k)
        ll += hsic_unbiased(l, l)
    if kk <= 0 or ll <= 0:
        raise ValueError("minibatch CKA: a representation has non-positive self-HSIC (constant features?)")
    return kl / np.sqrt(kk * ll)
