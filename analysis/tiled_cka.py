"""Exact linear CKA by tiles of the image Gram matrices: memory bounded whatever n and d.

With centred rows, HSIC_lin(X, Y) = <Xc Xc^T, Yc Yc^T> summed over every pair of images. The
n x n Gram matrices are never held: the images are cut into tiles of rows, and for each pair
of tiles (a, b), b >= a, the tiles' Gram blocks Xc_a Xc_b^T of every key are formed and their
inner products accumulated (off-diagonal pairs count twice, by symmetry). Memory is two tiles
of rows of every key in float64 plus one Gram block per key: the tile height is chosen to fit
`max_bytes`, so a full feature map of any width (ImageNet's b=24, 262,144 values an image)
runs in a fixed budget. When every key's rows fit in the budget as stored, they are read
once and held on the device; otherwise tile b is read again for every tile a.

The arithmetic is float64 torch on any device: `device="cuda"` runs it on a GPU. The cost is
about n^2 (d_1 + d_2 + ...) multiply-adds, against n d^2 for the feature moments: it is the
path for wide keys, not for many images.
"""

from __future__ import annotations

import numpy as np

from extract.store.progress import bar as progress_bar

MIN_TILE = 16


def tile_bytes(dims: list[int], itemsizes: list[int], tile: int) -> int:
    """Working memory at a tile height: for tiles a and b of every key, the rows as read from the
    store, their valid rows picked out, and as float64; one Gram block per key and one product."""
    rows = sum(2 * tile * d * (8 + 2 * s) for d, s in zip(dims, itemsizes))
    return rows + (len(dims) + 1) * 8 * tile * tile


def resident_bytes(n: int, dims: list[int], itemsizes: list[int]) -> int:
    """Every key's valid rows held as stored."""
    return sum(n * d * s for d, s in zip(dims, itemsizes))


def plan_tiles(n: int, dims: list[int], itemsizes: list[int], max_bytes: int) -> tuple[int, bool] | None:
    """(tile height, rows held resident) within max_bytes, or None when not even MIN_TILE rows fit.

    Rows are held resident when they fit beside tiles of at least 1024 rows (or of all n); the
    tile is then as tall as the rest of the budget allows."""
    held = resident_bytes(n, dims, itemsizes)
    for resident in (True, False):
        budget = max_bytes - (held if resident else 0)
        tile = min(n, MIN_TILE)
        if tile_bytes(dims, itemsizes, tile) > budget:
            continue
        hi = n
        while tile < hi:  # the largest tile that fits: binary search
            mid = (tile + hi + 1) // 2
            if tile_bytes(dims, itemsizes, mid) <= budget:
                tile = mid
            else:
                hi = mid - 1
        if resident and tile < min(n, 1024):
            continue
        return tile, resident
    return None


def _read(keys, i: int, rows: np.ndarray) -> np.ndarray:
    """Key i's rows at the given sorted store positions, as stored: (len(rows), d_i)."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    x = keys.arrays[i][lo:hi]
    x = (x[:, 0] if keys.views[i] else x).reshape(hi - lo, -1)
    return x if hi - lo == len(rows) else x[rows - lo]  # every row valid: no copy


def tiled_products(
    keys, rows: list[int], cols: list[int], *, max_bytes: int, device: str = "cpu", progress: bool = True
) -> dict[tuple[int, int], float]:
    """<Kc_i, Kc_j>, the centred Gram matrices' inner products, of every key in `rows` with every
    key in `cols` and of each with itself, as {(i, j), i <= j: value} (exact; float64 on `device`)."""
    import torch  # only this path needs it: the other CKA paths run on numpy alone

    used = sorted(set(rows) | set(cols))
    dims, sizes = [keys.dims[i] for i in used], [keys.itemsize(i) for i in used]
    where = np.flatnonzero(keys.valid)
    n = len(where)
    plan = plan_tiles(n, dims, sizes, max_bytes)
    if plan is None:
        raise ValueError(
            f"linear CKA by tiles needs {tile_bytes(dims, sizes, MIN_TILE) / 2**30:.1f} GiB "
            f"for {MIN_TILE}-row tiles of {len(used)} keys ({max(dims)} features), "
            f"more than the {max_bytes / 2**30:.1f} GiB allowed (--max-memory-gb)"
        )
    tile, resident = plan
    dev = torch.device(device)
    # the column means, in one pass (float64), a tile of rows at a time: within the plan's memory
    means = {i: np.zeros(keys.dims[i]) for i in used}
    for start in range(0, n, tile):
        part = where[start : start + tile]
        for i in used:
            means[i] += _read(keys, i, part).sum(axis=0, dtype=np.float64)
    means = {i: torch.from_numpy(m / n).to(dev) for i, m in means.items()}
    held = {}
    if resident:
        for i in used:
            held[i] = np.empty((n, keys.dims[i]), dtype=keys.arrays[i].dtype)
            for start in range(0, n, tile):
                held[i][start : start + tile] = _read(keys, i, where[start : start + tile])

    def centred(i: int, a: int):
        rows_a = slice(a, min(a + tile, n))
        x = held[i][rows_a] if resident else _read(keys, i, where[rows_a])
        # centred in place
        return torch.from_numpy(np.ascontiguousarray(x)).to(dev, torch.float64).sub_(means[i])

    # HSIC is symmetric
    pairs = sorted({(min(i, j), max(i, j)) for i in rows for j in cols} | {(i, i) for i in used})
    hsic = dict.fromkeys(pairs, None)
    starts = list(range(0, n, tile))
    tile_pairs = [(a, b) for ai, a in enumerate(starts) for b in starts[ai:]]
    current, xa, xb, grams = None, {}, {}, {}
    for a, b in progress_bar(progress, iterable=tile_pairs, desc="cka tiles", unit="tile pair"):
        xb, grams = {}, {}  # the last pair's tiles go before the next are read: two tiles a key at most
        if current != a:
            xa = {}
            current, xa = a, {i: centred(i, a) for i in used}
        xb = xa if b == a else {i: centred(i, b) for i in used}
        grams = {i: xa[i] @ xb[i].T for i in used}
        weight = 1.0 if a == b else 2.0
        for i, j in pairs:
            term = weight * torch.vdot(grams[i].reshape(-1), grams[j].reshape(-1))
            hsic[(i, j)] = term if hsic[(i, j)] is None else hsic[(i, j)] + term
    return {p: float(v) for p, v in hsic.items()}
