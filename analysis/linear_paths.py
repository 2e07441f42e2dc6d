"""Linear CKA over cached keys, by whichever exact path fits in memory.

Every path computes the same products in float64, <Kc_i, Kc_j> = ||Xc_i^T Xc_j||_F^2 = <HK_iH, HK_jH>,
for each pair of keys compared and each key with itself; `cka_from_products` turns them into CKA
with the biased estimator (Kornblith et al.: <HKH, HLH> / (||HKH||_F ||HLH||_F)) or the
unbiased one (Song et al.'s HSIC, which needs only the centred rows' squared norms beside them):

- moments: one streamed (D x D) feature Gram matrix over all keys (D features in all); its
  memory does not grow with the number of images n, so it suits narrow keys and large n.
- gram: one centred (n x n) image Gram matrix per key, built tile by tile from the key's rows
  as stored; memory grows with n^2 and the number of keys, not with the width d, so it suits
  wide keys (full feature maps) and moderate n.
- pairwise: one pair of keys at a time, by moments (16 (d_i + d_j)^2 bytes) or by two Gram
  matrices (16 n^2 bytes), whichever fits; each key's Gram is rebuilt for each pair it is in.
- tiles: the Gram matrices' inner products accumulated tile pair by tile pair
  (`analysis.tiled_cka`), with tiles as tall as `max_bytes` allows: bounded memory whatever
  n and d, at n^2 (d_1 + d_2 + ...) multiply-adds; float64 torch, on a GPU with `device`.

`plan_linear` picks the first that fits in `max_bytes` (on a device other than the CPU, tiles);
a request that fits none is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.cka import CrossMoments, hsic_unbiased_centred
from analysis.cka_config import DEFAULT_MAX_BYTES, ESTIMATORS, LINEAR_PATHS
from analysis.tiled_cka import MIN_TILE, tile_bytes, tiled_products
from extract.store.progress import bar as progress_bar

GIB = 2**30


@dataclass(frozen=True)
class Keys:
    """The keys under comparison: zarr arrays (n, [views,] ...), their widths and item sizes."""

    arrays: list
    views: list[bool]
    dims: list[int]
    valid: np.ndarray  # (n_rows,) bool: the rows compared

    @property
    def n(self) -> int:
        return int(self.valid.sum())

    def itemsize(self, i: int) -> int:
        return np.dtype(self.arrays[i].dtype).itemsize


def moments_bytes(dims: list[int], block_rows: int) -> int:
    """The (D x D) float64 moments and the (D x D) product added to them, plus one float64 block
    of rows read and its concatenation."""
    total = sum(dims)
    return 16 * total * total + 16 * total * block_rows


def _tile_rows(n: int, d: int) -> int:
    """Rows per tile of the Gram build: two float64 tiles stay under 64 MiB."""
    return int(max(16, min(n, (64 << 20) // (16 * max(d, 1)))))


def gram_work_bytes(n: int, d: int, itemsize: int) -> int:
    """Building one key's Gram: its valid rows as stored, and two float64 tiles."""
    return n * d * itemsize + 16 * _tile_rows(n, d) * d


def gram_bytes(keys: Keys, held: int) -> int:
    """`held` centred Gram matrices held at once, plus the largest build's working memory."""
    n = keys.n
    work = max(gram_work_bytes(n, d, keys.itemsize(i)) for i, d in enumerate(keys.dims))
    return held * 8 * n * n + work


def plan_linear(
    keys: Keys,
    rows: list[int],
    cols: list[int],
    max_bytes: int,
    block_rows: int,
    path: str = "auto",
    device: str = "cpu",
) -> str:
    """The path to take: the one asked for, or under 'auto' the first of moments, gram, pairwise
    and tiles whose memory fits in max_bytes (tiles on a device other than the CPU). Raises
    ValueError naming the sizes where none fits."""
    if path not in LINEAR_PATHS:
        raise ValueError(f"linear CKA path must be one of {', '.join(LINEAR_PATHS)}, got {path!r}")
    used = sorted(set(rows) | set(cols))
    dims = [keys.dims[i] for i in used]
    sizes = [keys.itemsize(i) for i in used]
    n = keys.n
    block_rows = min(block_rows, len(keys.valid))
    need = {
        "moments": moments_bytes(dims, block_rows),
        "gram": gram_bytes(keys, len(used)),
        "pairwise": min(
            gram_bytes(keys, 2),
            max(moments_bytes([keys.dims[i], keys.dims[j]], block_rows) for i in rows for j in cols),
        ),
        "tiles": tile_bytes(dims, sizes, min(n, MIN_TILE)),
    }
    if path == "auto" and device != "cpu":
        path = "tiles"
    if path != "auto":
        if need[path] > max_bytes:
            raise ValueError(
                f"linear CKA by {path} needs {need[path] / GIB:.1f} GiB, "
                f"more than the {max_bytes / GIB:.1f} GiB allowed (--max-memory-gb)"
            )
        if device != "cpu" and path != "tiles":
            raise ValueError(f"--device {device} runs the tiles path only; the {path} path runs on the CPU")
        return path
    for name in ("moments", "gram", "pairwise", "tiles"):
        if need[name] <= max_bytes:
            return name
    raise ValueError(
        f"linear CKA of {len(used)} keys (up to {max(dims)} features each) over {n} images needs at least "
        f"{need['tiles'] / GIB:.1f} GiB even by {MIN_TILE}-row tiles, "
        f"more than the {max_bytes / GIB:.1f} GiB allowed (--max-memory-gb); "
        "compare fewer keys at once or smaller pools"
    )


def _rows(arr, view: bool, start: int, stop: int) -> np.ndarray:
    x = arr[start:stop]
    x = x[:, 0] if view else x
    return x.reshape(stop - start, -1)


def valid_blocks(
    arrays,
    views,
    valid: np.ndarray,
    which: list[int],
    block_rows: int,
    progress: bool = False,
    desc: str = "cka",
):
    """The valid rows of arrays[i] for i in `which`, block by block, as stored: lists of (rows, d_i)."""
    total = len(valid)
    for start in progress_bar(progress, iterable=range(0, total, block_rows), desc=desc, unit="block"):
        stop = min(start + block_rows, total)
        use = valid[start:stop]
        if use.any():
            yield [_rows(arrays[i], views[i], start, stop)[use] for i in which]


def _blocks(keys: Keys, which: list[int], block_rows: int, progress: bool):
    """The same blocks as float64."""
    for blocks in valid_blocks(keys.arrays, keys.views, keys.valid, which, block_rows, progress):
        yield [b.astype(np.float64) for b in blocks]


Products = dict[tuple[int, int], float]  # (i, j), i <= j -> <Kc_i, Kc_j>, the centred Grams' inner product


def _pairs(rows: list[int], cols: list[int]) -> set[tuple[int, int]]:
    """The products a map needs: every (row, col) pair and every key with itself, as (i <= j)."""
    used = set(rows) | set(cols)
    return {(min(i, j), max(i, j)) for i in rows for j in cols} | {(i, i) for i in used}


def _by_moments(keys: Keys, rows: list[int], cols: list[int], block_rows: int, progress: bool) -> Products:
    used = sorted(set(rows) | set(cols))
    place = {k: i for i, k in enumerate(used)}
    moments = CrossMoments([keys.dims[i] for i in used])
    for blocks in _blocks(keys, used, block_rows, progress):
        moments.add(blocks)
    out = {}
    for i, j in _pairs(rows, cols):
        xy = moments.centred_cross(place[i], place[j])  # Xc_i^T Xc_j: ||.||_F^2 = <Kc_i, Kc_j>
        out[(i, j)] = float(np.sum(xy * xy))
    return out


def centred_gram(keys: Keys, i: int, block_rows: int) -> np.ndarray:
    """H K H for key i: K = X X^T over its valid rows (n x n float64), built tile by tile from
    the rows as stored, so no (n x d) float64 copy is ever held."""
    x = _stored_rows(keys, i, block_rows)
    n, d = x.shape
    tile = _tile_rows(n, d)
    k = np.empty((n, n))
    for a in range(0, n, tile):
        xa = x[a : a + tile].astype(np.float64)
        for b in range(a, n, tile):
            xb = xa if b == a else x[b : b + tile].astype(np.float64)
            block = xa @ xb.T
            k[a : a + tile, b : b + tile] = block
            if b != a:
                k[b : b + tile, a : a + tile] = block.T
    k -= k.mean(axis=0, keepdims=True)
    k -= k.mean(axis=1, keepdims=True)
    return k


def _stored_rows(keys: Keys, i: int, block_rows: int) -> np.ndarray:
    """Key i's valid rows in the store's own dtype: (n, d_i), filled in place (one copy)."""
    x = np.empty((keys.n, keys.dims[i]), dtype=keys.arrays[i].dtype)
    filled = 0
    for (block,) in valid_blocks(keys.arrays, keys.views, keys.valid, [i], block_rows):
        x[filled : filled + len(block)] = block
        filled += len(block)
    return x


def _by_grams(keys: Keys, rows: list[int], cols: list[int], block_rows: int, progress: bool) -> Products:
    used = sorted(set(rows) | set(cols))
    grams = {
        i: centred_gram(keys, i, block_rows)
        for i in progress_bar(progress, iterable=used, desc="cka grams", unit="key")
    }
    return {(i, j): float(np.vdot(grams[i], grams[j])) for i, j in _pairs(rows, cols)}


def _by_pairs(
    keys: Keys, rows: list[int], cols: list[int], max_bytes: int, block_rows: int, progress: bool
) -> Products:
    """One pair at a time: two Grams when they fit, else the pair's moments."""
    use_grams = gram_bytes(keys, 2) <= max_bytes
    buffer_rows = min(block_rows, len(keys.valid))
    out: Products = {}
    pairs = [(i, j) for i in rows for j in cols]
    current, current_gram = None, None
    for i, j in progress_bar(progress, iterable=pairs, desc="cka pairs", unit="pair"):
        pair_fits = moments_bytes([keys.dims[i], keys.dims[j]], buffer_rows) <= max_bytes
        cheaper = keys.dims[i] + keys.dims[j] < keys.n  # n (d_i + d_j)^2 against n^2 (d_i + d_j) flops
        if not use_grams or (pair_fits and cheaper):
            out.update(_by_moments(keys, [i], [j], block_rows, False))
            continue
        if current != i:
            current, current_gram = i, centred_gram(keys, i, block_rows)
            out[(i, i)] = float(np.vdot(current_gram, current_gram))
        if j == i:
            continue
        other = centred_gram(keys, j, block_rows)
        out[(j, j)] = float(np.vdot(other, other))
        out[(min(i, j), max(i, j))] = float(np.vdot(current_gram, other))
        del other
    return out


def centred_sq_norms(keys: Keys, which: list[int], block_rows: int) -> dict[int, np.ndarray]:
    """Each key's valid rows' squared norms after centring, (n,) float64: the diagonals of the
    centred Grams, all the unbiased estimator needs beside the products. Two streamed passes
    (the means, then the norms): one block of rows in float64 at a time, n floats per key."""
    sums = {i: np.zeros(keys.dims[i]) for i in which}
    for blocks in _blocks(keys, which, block_rows, False):
        for i, b in zip(which, blocks):
            sums[i] += b.sum(axis=0)
    means = {i: s / keys.n for i, s in sums.items()}
    parts: dict[int, list] = {i: [] for i in which}
    for blocks in _blocks(keys, which, block_rows, False):
        for i, b in zip(which, blocks):
            b -= means[i]
            parts[i].append(np.einsum("ij,ij->i", b, b))
    return {i: np.concatenate(p) for i, p in parts.items()}


def cka_from_products(
    products: Products, rows: list[int], cols: list[int], sq_norms: dict[int, np.ndarray] | None = None
) -> np.ndarray:
    """CKA of every (row, col) key pair: the biased estimator from the products alone (Kornblith
    et al.), or with the centred rows' squared norms the unbiased one (Song et al.'s HSIC in the
    ratio). A key whose self-HSIC is not positive (constant features) gives NaN."""

    def hsic(i: int, j: int) -> float:
        g = products[(min(i, j), max(i, j))]
        return g if sq_norms is None else hsic_unbiased_centred(g, sq_norms[i], sq_norms[j])

    def cka(i: int, j: int) -> float:
        denom = hsic(i, i) * hsic(j, j)
        return float(hsic(i, j) / np.sqrt(denom)) if denom > 0 else float("nan")

    return np.array([[cka(i, j) for j in cols] for i in rows])


def linear_cka(
    keys: Keys,
    rows: list[int],
    cols: list[int],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    block_rows: int = 4096,
    path: str = "auto",
    device: str = "cpu",
    progress: bool = True,
    estimator: str = "biased",
) -> tuple[np.ndarray, str]:
    """CKA of every key in `rows` against every key in `cols`: (len(rows), len(cols)) and the
    path taken. Memory stays under max_bytes (numpy's or the device's arrays; the store reader
    adds its own block of rows). estimator: 'biased' (Kornblith et al.'s, inflated where the
    width far exceeds n) or 'unbiased' (Song et al.'s HSIC; needs n >= 4; two more passes)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"CKA estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if estimator == "unbiased" and keys.n < 4:
        raise ValueError(f"unbiased CKA needs at least 4 valid images, got {keys.n}")
    chosen = plan_linear(keys, rows, cols, max_bytes, block_rows, path, device)
    if chosen == "tiles":
        products = tiled_products(keys, rows, cols, max_bytes=max_bytes, device=device, progress=progress)
    elif chosen == "moments":
        products = _by_moments(keys, rows, cols, block_rows, progress)
    elif chosen == "gram":
        products = _by_grams(keys, rows, cols, block_rows, progress)
    else:
        products = _by_pairs(keys, rows, cols, max_bytes, block_rows, progress)
    norms = None
    if estimator == "unbiased":
        norms = centred_sq_norms(keys, sorted(set(rows) | set(cols)), block_rows)
    return cka_from_products(products, rows, cols, norms), chosen
