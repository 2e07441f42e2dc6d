"""Read rate of a store on object storage against plain concurrent ranged GETs of its objects.

Three reads of the same feature array's shard objects, each timed whole (best of `repeats`):

- plain: the objects' bytes fetched by ranged GETs of one inner chunk's size each (obstore's
  `get_ranges`, its requests concurrent, objects in parallel on the reader's thread pool),
  nothing decoded, checked or copied: what the network and server give;
- diffprobe's shard reader (`extract.store.shard_read`): the same GETs (each shard's index
  joined to its last chunk's range), the index checked, the CRC32C of every chunk, and one
  copy into the output array;
- zarr-python through its ObjectStore, for reference.

The ratio diffprobe / plain is the reader's cost over the network; no local cache is used.
"""

from __future__ import annotations

import time

import numpy as np

from extract.store.location import StoreURL
from extract.store.schema import FeatureKey, FeatureStore
from extract.store.shard_read import FeatureArray, url_pool


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _shard_objects(array: FeatureArray, n_shards: int) -> tuple[object, list[tuple[str, int]]]:
    """(obstore store, [(shard object key, size)]) of the array's first n_shards shards."""
    import obstore

    (store, folder), _ = array._layout
    keys = ["/".join([folder, "c", str(s), *["0"] * (array.ndim - 1)]) for s in range(n_shards)]
    return store, [(k, int(obstore.head(store, k)["size"])) for k in keys]


def plain_ranged_gets(store, objects: list[tuple[str, int]], part_bytes: int) -> int:
    """Fetch every object whole by ranged GETs of part_bytes each (obstore's `get_ranges`, one call
    per object, objects in parallel on the reader's thread pool); returns the bytes read."""
    import obstore

    def one(obj: tuple[str, int]) -> int:
        key, size = obj
        starts = list(range(0, size, part_bytes))
        lengths = [min(part_bytes, size - s) for s in starts]
        return sum(len(b) for b in obstore.get_ranges(store, key, starts=starts, lengths=lengths, coalesce=0))

    return sum(url_pool().map(one, objects))


def bench_url_store(url: StoreURL, key: str | None = None, rows: int | None = None, repeats: int = 3) -> dict:
    """Rates in MB/s (of the objects' bytes) of the three reads of one key's first `rows` rows
    (whole shards; default: every row)."""
    s = FeatureStore.open(url)
    k = FeatureKey.parse(key) if key else max(s.keys(), key=lambda k: int(np.prod(s.array(k).shape[1:])))
    array = s.array(k)
    if not array.fast:
        raise ValueError(f"{url} {k}: not in the layout diffprobe's reader fetches by ranged GETs")
    shard_rows = array.shard_rows
    n_shards = -(-min(rows or s.n_rows, s.n_rows) // shard_rows)
    stop = min(n_shards * shard_rows, s.n_rows)
    store, objects = _shard_objects(array, n_shards)
    nbytes = sum(size for _, size in objects)
    chunk_bytes = array._layout[1] * array.dtype.itemsize * int(np.prod(array.shape[1:])) + 4

    def by_shard(read) -> None:
        for lo in range(0, stop, shard_rows):
            read(lo, min(lo + shard_rows, stop))

    times = {
        "plain concurrent ranged GETs": _best(
            lambda: plain_ranged_gets(store, objects, chunk_bytes), repeats
        ),
        "diffprobe, all rows": _best(lambda: array.read(0, stop), repeats),
        "diffprobe, shard by shard": _best(lambda: by_shard(array.read), repeats),
        "zarr-python ObjectStore": _best(lambda: np.asarray(array.zarr[0:stop]), repeats),
    }
    plain = nbytes / 1e6 / times["plain concurrent ranged GETs"]
    return {
        "kind": "url",
        "store": str(url),
        "key": str(k),
        "rows": stop,
        "objects": len(objects),
        "mb": round(nbytes / 1e6, 1),
        "chunk_bytes": chunk_bytes,
        "repeats": repeats,
        "results": [
            {
                "reader": name,
                "mb_per_s": round(nbytes / 1e6 / t, 1),
                "of_plain": round(nbytes / 1e6 / t / plain, 3),
            }
            for name, t in times.items()
        ],
    }


def format_url(r: dict) -> str:
    lines = [
        f"object storage, {r['store']} {r['key']}: {r['rows']} rows in {r['objects']} shard objects "
        f"({r['mb']} MB), ranged GETs of {r['chunk_bytes']} bytes, best of {r['repeats']}",
        f"  {'reader':<30} {'MB/s':>7} {'of plain':>9}",
    ]
    lines += [f"  {x['reader']:<30} {x['mb_per_s']:>7.0f} {x['of_plain']:>8.0%}" for x in r["results"]]
    return "\n".join(lines)
