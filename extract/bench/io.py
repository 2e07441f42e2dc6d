"""Cache I/O: codecs and readers against a raw numpy read of the same bytes, in one run.

The same rows are written once per codec in the store's own layout (row-shards of
`shard_rows`, inner chunks of CHUNK_BYTES) and read back shard by shard, as probe and
analysis read, by each reader that can read that layout:

- zarr-python (its default concurrency; and with async.concurrency raised);
- tensorstore's zarr3 driver, when it is installed;
- diffprobe's shard reader (`extract.store.shard_read`), for the CRC32C-only layout.

Everything is written first, so every read comes from a warm page cache: the ratios are
the cost of decoding (sharding index, codec, CRC32C), not of the disk. The rows are
activation-like (SiLU of per-channel scaled and shifted normals, fp16), and optionally the
rows of one key of a real store."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from extract.store.location import StoreURL
from extract.store.schema import CHUNK_BYTES, FeatureKey, FeatureStore, chunk_rows_for, feature_codecs
from extract.store.shard_read import FeatureArray

CODECS = {
    "crc32c (diffprobe's)": feature_codecs,
    "none": lambda: [],
    "zstd-1 + crc32c": lambda: [ZstdCodec(level=1), Crc32cCodec()],
    # level 0 is zstd's default, 3
    "zstd-3 + crc32c (earlier stores)": lambda: [ZstdCodec(level=0), Crc32cCodec()],
    "blosc-lz4 bitshuffle + crc32c": lambda: [
        BloscCodec(cname="lz4", shuffle="bitshuffle", typesize=2),
        Crc32cCodec(),
    ],
}


def activation_like(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """(rows, dim // 4, 2, 2) fp16: SiLU of normals with a scale and shift per channel, as a
    pooled block's output."""
    rng = np.random.default_rng(seed)
    c = dim // 4
    scale, shift = rng.uniform(0.2, 2.0, (1, c, 1, 1)), rng.normal(0, 1, (1, c, 1, 1))
    h = rng.standard_normal((rows, c, 2, 2), dtype=np.float32) * scale + shift
    return (h / (1 + np.exp(-h))).astype(np.float16)


def _write(path: Path, x: np.ndarray, shard_rows: int, codecs: list) -> zarr.Array:
    row = x.shape[1:]
    rows = chunk_rows_for(int(np.prod(row)) * x.itemsize, shard_rows)
    array = zarr.open_group(str(path), mode="w").create_array(
        "x",
        shape=x.shape,
        dtype=x.dtype,
        chunks=(rows, *row),
        shards=(shard_rows, *row),
        compressors=codecs,
        fill_value=float("nan"),
    )
    for s in range(0, len(x), shard_rows):
        array[s : s + shard_rows] = x[s : s + shard_rows]
    return array


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def best_time(fn, repeats: int) -> float:
    """The shortest of `repeats` timed calls of fn, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _readers(path: Path, n: int, shard_rows: int) -> dict:
    """name -> a function reading every row shard by shard, for the readers that can read this layout."""
    spans = [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)]
    za = zarr.open_array(str(path / "x"), mode="r")
    readers = {"zarr-python": lambda: [za[a:b] for a, b in spans]}

    def zarr_concurrent():
        with zarr.config.set({"async.concurrency": 64, "threading.max_workers": 4}):
            arr = zarr.open_array(str(path / "x"), mode="r")
            return [arr[a:b] for a, b in spans]

    readers["zarr-python, concurrency 64"] = zarr_concurrent
    try:
        import tensorstore as ts

        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "x")}}
        handle = ts.open(spec, read=True).result()
        readers["tensorstore"] = lambda: [handle[a:b].read().result() for a, b in spans]
    except ImportError:
        pass
    fast = FeatureArray(za)
    if fast.fast:
        readers["diffprobe shard reader"] = lambda: [fast[a:b] for a, b in spans]
    return readers


def bench_data(
    x: np.ndarray, shard_rows: int = 2048, repeats: int = 3, label: str = "activation-like"
) -> dict:
    """Every codec x reader on the rows x, against np.load of the same bytes."""
    n, nbytes = len(x), x.nbytes
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.npy"
        np.save(raw, x)
        raw_s = best_time(lambda: np.load(raw), repeats)
        offset = np.load(raw, mmap_mode="r").offset

        def raw_by_shard():
            with open(raw, "rb") as f:
                row_bytes = nbytes // n
                return [
                    np.fromfile(
                        f,
                        dtype=x.dtype,
                        count=(min(s + shard_rows, n) - s) * row_bytes // x.itemsize,
                        offset=offset + s * row_bytes,
                    )
                    for s in range(0, n, shard_rows)
                ]

        raw_shard_s = best_time(raw_by_shard, repeats)
        for name, codecs in CODECS.items():
            path = Path(tmp) / name.split()[0]
            _write(path, x, shard_rows, codecs())
            size = _size(path / "x")
            for reader, fn in _readers(path, n, shard_rows).items():
                if not np.array_equal(np.concatenate(fn()), x, equal_nan=True):
                    raise RuntimeError(f"bench-io: {reader} read other values than were written with {name}")
                seconds = best_time(fn, repeats)
                rows.append(
                    {
                        "codec": name,
                        "reader": reader,
                        "mb_per_s": round(nbytes / 1e6 / seconds, 1),
                        "seconds": round(seconds, 4),
                        "size_ratio": round(size / nbytes, 3),
                        "of_raw": round(raw_s / seconds, 3),
                    }
                )
    return {
        "data": label,
        "rows": n,
        "row_shape": list(x.shape[1:]),
        "dtype": str(x.dtype),
        "mb": round(nbytes / 1e6, 1),
        "shard_rows": shard_rows,
        "chunk_bytes": CHUNK_BYTES,
        "repeats": repeats,
        "raw_mb_per_s": round(nbytes / 1e6 / raw_s, 1),
        "raw_by_shard_mb_per_s": round(nbytes / 1e6 / raw_shard_s, 1),
        "results": rows,
    }


def bench_io(
    rows: int = 20000,
    dim: int = 4096,
    shard_rows: int = 2048,
    repeats: int = 3,
    store: Path | StoreURL | None = None,
    key: str | None = None,
) -> dict:
    """Activation-like rows and, with `store`, one key of a real store (its first `rows` rows); a
    store at a URL is read where it is, against plain ranged GETs of its objects (`io_url`)."""
    parts = [bench_data(activation_like(rows, dim), shard_rows, repeats)]
    if isinstance(store, StoreURL):
        from extract.bench.io_url import bench_url_store

        parts.append(bench_url_store(store, key, rows, repeats))
    elif store is not None:
        s = FeatureStore.open(store)
        k = FeatureKey.parse(key) if key else max(s.keys(), key=lambda k: int(np.prod(s.array(k).shape[1:])))
        x = s.array(k)[: min(rows, s.n_rows)]
        parts.append(
            bench_data(
                np.ascontiguousarray(x),
                min(shard_rows, int(s.layout["shard_rows"])),
                repeats,
                f"{Path(store).name} {k}",
            )
        )
    return {"parts": parts}


def format_table(result: dict) -> str:
    lines = []
    for r in result["parts"]:
        if r.get("kind") == "url":
            from extract.bench.io_url import format_url

            lines.append(format_url(r))
            continue
        lines += [
            f"cache I/O, {r['data']}: {r['rows']} rows x {r['row_shape']} {r['dtype']} ({r['mb']} MB), "
            f"{r['shard_rows']}-row shards, warm page cache, best of {r['repeats']}",
            f"  raw np.load of the same bytes: {r['raw_mb_per_s']:.0f} MB/s "
            f"(by shard with np.fromfile: {r['raw_by_shard_mb_per_s']:.0f} MB/s)",
            f"  {'codec':<34} {'reader':<28} {'MB/s':>7} {'of raw':>7} {'size':>6}",
        ]
        for row in r["results"]:
            rate = f"{row['mb_per_s']:>7.0f} {row['of_raw']:>6.0%}"
            lines.append(f"  {row['codec']:<34} {row['reader']:<28} {rate} {row['size_ratio']:>5.2f}x")
    return "\n".join(lines)
