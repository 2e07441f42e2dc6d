"""Alignment metrics of two representations of the same images by their nearest neighbours
(Huh et al., 2024, the Platonic Representation Hypothesis): pure functions, no I/O.

Rows are L2-normalised first, so a kernel value is a cosine similarity. Each representation
gives, for every image i, its k nearest neighbours N(i) by inner product, i itself excluded,
and the similarities to them. From those (n, k) arrays alone, without an n x n matrix:

- mutual kNN: the mean over images of |N_A(i) & N_B(i)| / k;
- CKNNA: CKA with Song et al.'s unbiased HSIC, where each kernel keeps only the pairs (i, j)
  with j among i's neighbours in both representations (and is zero elsewhere, its diagonal
  too). HSIC(A, B) uses the mask N_A & N_B; HSIC(A, A) uses N_A alone.

`neighbours` finds N(i) by tiles of rows, so memory stays bounded whatever n and the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.store.progress import bar as progress_bar

MIN_TILE = 16


@dataclass(frozen=True)
class Neighbours:
    """Each image's k nearest neighbours: indices (n, k) int64 and similarities (n, k) float64,
    most similar first."""

    index: np.ndarray
    value: np.ndarray

    @property
    def n(self) -> int:
        return int(self.index.shape[0])

    @property
    def k(self) -> int:
        return int(self.index.shape[1])


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (n, d); an all-zero row stays zero."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    return x / np.where(norm > 0, norm, 1)[:, None]


def neighbour_tile(n: int, d: int, k: int, max_bytes: int) -> int:
    """The tallest tile of rows whose work fits in max_bytes: two tiles of rows (float32), their
    similarity block and the candidates kept (float64 and int64)."""

    def need(t: int) -> int:
        return 2 * t * d * 4 + 8 * t * t + 32 * t * (t + k)

    if need(min(n, MIN_TILE)) > max_bytes:
        raise ValueError(
            f"nearest neighbours of {d}-wide rows need {need(MIN_TILE) / 2**30:.1f} GiB even by "
            f"{MIN_TILE}-row tiles, more than the {max_bytes / 2**30:.1f} GiB allowed (--max-memory-gb)"
        )
    lo, hi = min(n, MIN_TILE), n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= max_bytes else (lo, mid - 1)
    return lo


def neighbours(
    rows, k: int, *, max_bytes: int, progress: bool = False, desc: str = "neighbours"
) -> Neighbours:
    """The k nearest neighbours of every row of `rows` by inner product, itself excluded.

    rows: an array-like of shape (n, d) whose row slices read as arrays (L2-normalised rows, for
    cosine neighbours). Memory: two tiles of rows and their similarity block (`neighbour_tile`);
    work: n^2 d multiply-adds, each tile of rows read n / tile times."""
    n, d = rows.shape
    if not 1 <= k < n:
        raise ValueError(f"k={k} nearest neighbours need more than k images and k >= 1; there are {n}")
    tile = neighbour_tile(n, d, k, max_bytes)
    index = np.empty((n, k), np.int64)
    value = np.empty((n, k))
    starts = range(0, n, tile)
    for a in progress_bar(progress, iterable=starts, desc=desc, unit="tile"):
        xa = np.asarray(rows[a : a + tile], np.float32)
        m = len(xa)
        best_v, best_i = np.empty((m, 0)), np.empty((m, 0), np.int64)
        for b in starts:
            xb = xa if b == a else np.asarray(rows[b : b + tile], np.float32)
            sims = (xa @ xb.T).astype(np.float64)  # (m, len(xb))
            if b == a:
                np.fill_diagonal(sims, -np.inf)  # an image is not its own neighbour
            cand_v = np.concatenate([best_v, sims], axis=1)
            cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(b, b + len(xb)), sims.shape)], axis=1)
            if cand_v.shape[1] > k:
                keep = np.argpartition(-cand_v, k - 1, axis=1)[:, :k]
                cand_v = np.take_along_axis(cand_v, keep, axis=1)
                cand_i = np.take_along_axis(cand_i, keep, axis=1)
            best_v, best_i = cand_v, cand_i
        order = np.argsort(-best_v, axis=1, kind="stable")
        value[a : a + m] = np.take_along_axis(best_v, order, axis=1)
        index[a : a + m] = np.take_along_axis(best_i, order, axis=1)
    return Neighbours(index, value)


def _check(a: Neighbours, b: Neighbours) -> None:
    if a.index.shape != b.index.shape:
        raise ValueError(f"neighbour lists differ in shape: {a.index.shape} and {b.index.shape}")


def shared(a: Neighbours, b: Neighbours) -> np.ndarray:
    """(n, k) bool: whether a's j-th neighbour of image i is also among b's neighbours of i."""
    _check(a, b)
    return (a.index[:, :, None] == b.index[:, None, :]).any(axis=2)


def mutual_knn(a: Neighbours, b: Neighbours) -> float:
    """The mean over images of the fraction of their k neighbours the two representations share."""
    return float(shared(a, b).sum(axis=1).mean() / a.k)


def _masked_hsic(n: int, i: np.ndarray, j: np.ndarray, kv: np.ndarray, lv: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC of two n x n kernels that are zero except at the pairs (i, j)
    (no diagonal), where they hold kv and lv. With K~ and L~ those kernels:
    [sum(K~ o L~^T) + sum(K~) sum(L~) / ((n-1)(n-2)) - 2 sum(K~ L~) / (n-2)] / (n (n-3))."""
    if len(i) == 0:
        return 0.0
    code = i * n + j
    order = np.argsort(code)
    transposed = j * n + i  # the pair (j, i): kept where it is a pair too, with its own L value
    at = np.searchsorted(code[order], transposed).clip(max=len(code) - 1)
    found = code[order][at] == transposed
    cross = float(np.sum(kv[found] * lv[order][at][found]))  # sum(K~ o L~^T)
    col_k = np.bincount(j, weights=kv, minlength=n)  # 1^T K~
    row_l = np.bincount(i, weights=lv, minlength=n)  # L~ 1
    value = cross + kv.sum() * lv.sum() / ((n - 1) * (n - 2)) - 2 * float(col_k @ row_l) / (n - 2)
    return value / (n * (n - 3))


def _pairs(a: Neighbours, b: Neighbours) -> tuple[np.ndarray, ...]:
    """The pairs (i, j) with j a neighbour of i in both, and their similarities in a and in b."""
    hit = a.index[:, :, None] == b.index[:, None, :]  # (n, k, k): a's j-th neighbour is b's l-th
    keep = hit.any(axis=2)  # over a's lists, as `shared`
    rows = np.broadcast_to(np.arange(a.n)[:, None], a.index.shape)
    i, j, kv = rows[keep], a.index[keep], a.value[keep]
    lv = (hit * b.value[:, None, :]).sum(axis=2)[keep]  # b's similarity of the same pair
    return i, j, kv, lv


def cknna(a: Neighbours, b: Neighbours) -> float:
    """CKNNA: the unbiased HSIC of the kernels masked to shared neighbours, normalised like CKA
    by each representation's HSIC over its own neighbours. NaN where a self term is not positive."""
    _check(a, b)
    n = a.n
    if n < 4:
        raise ValueError(f"CKNNA's unbiased HSIC needs at least 4 images, got {n}")
    cross = _masked_hsic(n, *_pairs(a, b))
    own = []
    for x in (a, b):
        rows = np.broadcast_to(np.arange(n)[:, None], x.index.shape).reshape(-1)
        own.append(_masked_hsic(n, rows, x.index.reshape(-1), x.value.reshape(-1), x.value.reshape(-1)))
    denom = own[0] * own[1]
    return float(cross / np.sqrt(denom)) if denom > 0 else float("nan")
