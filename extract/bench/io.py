"""Cache I/O: reading a store's feature array against a raw contiguous numpy read of the same bytes.

Both files are written first, so both reads come from a warm page cache: the ratio is the
cost of Zarr's decoding (sharding index, zstd, CRC32C), not of the disk."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from extract.store.schema import FeatureKey, FeatureStore

KEY = FeatureKey(150, 24, 2)


def bench_io(rows: int = 20000, dim: int = 4096, shard_rows: int = 2048, repeats: int = 3) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore.create(
            Path(tmp) / "io.zarr", row_shapes={KEY: (dim // 4, 2, 2)}, ids=[str(i) for i in range(rows)],
            labels=np.zeros(rows, np.int64), index=np.arange(rows), shard_rows=shard_rows, views=1, dtype="float16", attrs={},
        )  # fmt: skip
        raw = Path(tmp) / "raw.npy"
        data = np.lib.format.open_memmap(raw, mode="w+", dtype=np.float16, shape=(rows, dim // 4, 2, 2))
        for s in range(store.n_shards):
            span = store.shard_rows(s)
            x = rng.standard_normal((len(span), dim // 4, 2, 2), dtype=np.float32).astype(np.float16)
            store.write_shard(s, {KEY: x}, np.ones(len(span), bool))
            data[span.start : span.stop] = x
        data.flush()
        del data
        nbytes = rows * dim * 2

        def zarr_read():
            array = store.array(KEY)
            return sum(int(array[s.start : s.stop].shape[0]) for s in map(store.shard_rows, range(store.n_shards)))

        def numpy_read():
            return int(np.load(raw).shape[0])

        timings = {}
        for name, fn in (("zarr store", zarr_read), ("raw numpy", numpy_read)):
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                assert fn() == rows
                best = min(best, time.perf_counter() - started)
            timings[name] = best
        return {
            "rows": rows, "dim": dim, "mb": round(nbytes / 1e6, 1), "store_mb": round(store.size_bytes() / 1e6, 1),
            "zarr_seconds": round(timings["zarr store"], 3), "numpy_seconds": round(timings["raw numpy"], 3),
            "zarr_mb_per_s": round(nbytes / 1e6 / timings["zarr store"], 1), "numpy_mb_per_s": round(nbytes / 1e6 / max(timings["raw numpy"], 1e-9), 1),
            "zarr_over_numpy": round(timings["zarr store"] / max(timings["raw numpy"], 1e-9), 2),
        }  # fmt: skip


def format_table(r: dict) -> str:
    return "\n".join([
        f"cache I/O: {r['rows']} rows x {r['dim']} fp16 features ({r['mb']} MB; {r['store_mb']} MB on disk), warm page cache, best of 3",
        f"  zarr store (sharded, zstd, crc32c)  {r['zarr_mb_per_s']:>8.0f} MB/s  ({r['zarr_seconds']:.2f} s)",
        f"  raw numpy read of the same bytes    {r['numpy_mb_per_s']:>8.0f} MB/s  ({r['numpy_seconds']:.2f} s)",
        f"  store / raw time                    {r['zarr_over_numpy']:>8.2f}x",
    ])  # fmt: skip
