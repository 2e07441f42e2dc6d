"""Linear CKA over cached keys, by whichever exact path fits in memory.

All three paths compute the same number, ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
= <HKH, HLH> / (||HKH||_F ||HLH||_F), in float64:

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

from analysis.cka import CrossMoments, linear_cka_matrix
from analysis.cka_config import DEFAULT_MAX_BYTES, LINEAR_PATHS
from analysis.tiled_cka import MIN_TILE, tile_bytes, tiled_linear_cka
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


def _by_moments(keys: Keys, rows: list[int], cols: list[int], block_rows: int, progress: bool) -> np.ndarray:
    used = sorted(set(rows) | set(cols))
    place = {k: i for i, k in enumerate(used)}
    moments = CrossMoments([keys.dims[i] for i in used])
    for blocks in _blocks(keys, used, block_rows, progress):
        moments.add(blocks)
    return linear_cka_matrix(moments, [place[i] for i in rows], [place[j] for j in cols])


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


def _ratio(cross: float, self_a: float, self_b: float) -> float:
    return float(cross / np.sqrt(self_a * self_b))


def _by_grams(keys: Keys, rows: list[int], cols: list[int], block_rows: int, progress: bool) -> np.ndarray:
    used = sorted(set(rows) | set(cols))
    grams = {
        i: centred_gram(keys, i, block_rows)
        for i in progress_bar(progress, iterable=used, desc="cka grams", unit="key")
    }
    norms = {i: float(np.vdot(g, g)) for i, g in grams.items()}
    return np.array([[_ratio(np.vdot(grams[i], grams[j]), norms[i], norms[j]) for j in cols] for i in rows])


def _by_pairs(
    keys: Keys, rows: list[int], cols: list[int], max_bytes: int, block_rows: int, progress: bool
) -> np.ndarray:
    """One pair at a time: two Grams when they fit, else the pair's moments."""
    use_grams = gram_bytes(keys, 2) <= max_bytes
    buffer_rows = min(block_rows, len(keys.valid))
    norms: dict[int, float] = {}
    out = np.empty((len(rows), len(cols)))
    pairs = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
    current, current_gram = None, None
    for r, c in progress_bar(progress, iterable=pairs, desc="cka pairs", unit="pair"):
        i, j = rows[r], cols[c]
        pair_fits = moments_bytes([keys.dims[i], keys.dims[j]], buffer_rows) <= max_bytes
        cheaper = keys.dims[i] + keys.dims[j] < keys.n  # n (d_i + d_j)^2 against n^2 (d_i + d_j) flops
        if not use_grams or (pair_fits and cheaper):
            out[r, c] = _by_moments(keys, [i], [j], block_rows, False)[0, 0]
            continue
        if current != i:
            current, current_gram = i, centred_gram(keys, i, block_rows)
            norms.setdefault(i, float(np.vdot(current_gram, current_gram)))
        if j == i:
            out[r, c] = 1.0 if norms[i] > 0 else np.nan
            continue
        other = centred_gram(keys, j, block_rows)
        norms.setdefault(j, float(np.vdot(other, other)))
        out[r, c] = _ratio(np.vdot(current_gram, other), norms[i], norms[j])
        del other
    return out


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
) -> tuple[np.ndarray, str]:
    """CKA of every key in `rows` against every key in `cols`: (len(rows), len(cols)) and the
    path taken. Memory stays under max_bytes (numpy's or the device's arrays; the store reader
    adds its own block of rows)."""
    chosen = plan_linear(keys, rows, cols, max_bytes, block_rows, path, device)
    if chosen == "tiles":
        return tiled_linear_cka(
            keys, rows, cols, max_bytes=max_bytes, device=device, progress=progress
        ), chosen
    if chosen == "moments":
        return _by_moments(keys, rows, cols, block_rows, progress), chosen
    if chosen == "gram":
        return _by_grams(keys, rows, cols, block_rows, progress), chosen
    return _by_pairs(keys, rows, cols, max_bytes, block_rows, progress), chosen
