"""`make bench-cka`: streamed linear CKA against the Gram-matrix version, time and peak memory.

Two random representations of n images (d features each, the second a noisy linear map of
the first) are compared both ways in one run. Peak memory is what numpy allocated, measured
with tracemalloc; the Gram version needs several n x n float64 matrices, so it is skipped
where those would not fit in `gram_limit_gb`.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

from analysis.cka import CrossMoments, linear_cka_from_moments, linear_cka_gram


def _measure(fn):
    tracemalloc.start()
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, seconds, peak


def bench_cka(
    sizes=(2000, 10000, 50000), dim: int = 256, block: int = 4096, gram_limit_gb: float = 6.0, seed: int = 0
) -> list[dict]:
    rows = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, dim)).astype(np.float32)
        mix = rng.standard_normal((dim, dim)).astype(np.float32)
        y = x @ mix + rng.standard_normal((n, dim)).astype(np.float32)

        def streamed():
            m = CrossMoments([dim, dim])
            for a in range(0, n, block):
                m.add([x[a : a + block], y[a : a + block]])
            return linear_cka_from_moments(m, 0, 1)

        s_value, s_time, s_peak = _measure(streamed)
        row = {
            "n": n,
            "dim": dim,
            "streamed_seconds": round(s_time, 3),
            "streamed_peak_mb": round(s_peak / 2**20, 1),
            "cka": round(s_value, 6),
        }
        gram_bytes = 5 * 8 * n * n  # K, L, their centred copies and a product
        if gram_bytes / 2**30 <= gram_limit_gb:
            g_value, g_time, g_peak = _measure(lambda: linear_cka_gram(x, y))
            row.update(
                gram_seconds=round(g_time, 3),
                gram_peak_mb=round(g_peak / 2**20, 1),
                gram_minus_streamed=float(g_value - s_value),
            )
        else:
            row.update(
                gram_seconds=None, gram_peak_mb=None, gram_skipped=f"needs about {gram_bytes / 2**30:.0f} GiB"
            )
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'n':>7} {'streamed s':>11} {'streamed MB':>12} {'gram s':>8} {'gram MB':>9}  agreement"]
    for r in rows:
        gram_s = "-" if r["gram_seconds"] is None else f"{r['gram_seconds']:.2f}"
        gram_mb = r.get("gram_skipped", "-") if r["gram_peak_mb"] is None else f"{r['gram_peak_mb']:.0f}"
        agree = f"{r['gram_minus_streamed']:+.1e}" if "gram_minus_streamed" in r else "-"
        streamed = f"{r['streamed_seconds']:>11.2f} {r['streamed_peak_mb']:>12.1f}"
        lines.append(f"{r['n']:>7} {streamed} {gram_s:>8} {gram_mb:>9}  {agree}")
    return "\n".join(lines)


# ---------------------------------------------------------------- full feature maps, through the store paths
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _measure_rss(fn):
    """(value, seconds, peak resident memory above the start): sampled every 5 ms, so numpy's
    and torch's allocations both count."""
    import threading

    base, peak, stop = _rss(), [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss() - base)
            stop.wait(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        watcher.join()
    return value, seconds, max(peak[0], _rss() - base)


def _synthetic_pair(path, n: int, shape: tuple[int, ...], seed: int = 0):
    """A store of two keys with `shape` rows each: a map and a noisy rolled copy of it (fp16)."""
    from extract.store.schema import FeatureKey, FeatureStore

    keys = (FeatureKey(150, 24, None), FeatureKey(150, 25, None))
    rng = np.random.default_rng(seed)
    store = FeatureStore.create(
        path,
        row_shapes=dict.fromkeys(keys, shape),
        ids=[str(i) for i in range(n)],
        labels=np.zeros(n, np.int64),
        index=np.arange(n),
        shard_rows=256,
        views=1,
        dtype="float16",
        attrs={},
    )
    for s in range(store.n_shards):
        span = store.shard_rows(s)
        x = rng.standard_normal((len(span), *shape), dtype=np.float32)
        y = np.roll(x, 1, axis=-1) + 0.5 * rng.standard_normal(x.shape, dtype=np.float32)
        store.write_shard(
            s, {keys[0]: x.astype(np.float16), keys[1]: y.astype(np.float16)}, np.ones(len(span), bool)
        )
    store.finish({})
    return keys


def bench_full_maps(
    store=None,
    keys=("t10/b9/full", "t10/b30/full"),
    imagenet_rows: int = 1000,
    max_gb: float = 2.0,
    device: str = "cpu",
    paths=("moments", "gram", "tiles"),
) -> list[dict]:
    """Linear CKA between two full feature maps by each exact path that fits in max_gb: a real
    store's two keys (the demo's b=9 and b=30 maps) and a synthetic ImageNet-b=24-sized pair
    (1024 x 16 x 16 = 262,144 values an image). Time and peak resident memory; agreement."""
    import tempfile
    from pathlib import Path

    # loaded before any measurement, so the tiles path's peak is its arrays, not torch's import
    import torch  # noqa: F401

    from analysis.cka_config import CkaConfig
    from analysis.compare import cka_map
    from extract.store.schema import FeatureKey

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        if store is not None:
            cases.append(
                (
                    f"{Path(store).name}: {keys[0]} vs {keys[1]}",
                    Path(store),
                    tuple(FeatureKey.parse(k) for k in keys),
                )
            )
        pair = _synthetic_pair(Path(tmp) / "imagenet-b24.zarr", imagenet_rows, (1024, 16, 16))
        cases.append(
            (
                f"synthetic ImageNet b=24 full map (262,144 values) x {imagenet_rows} images",
                Path(tmp) / "imagenet-b24.zarr",
                pair,
            )
        )
        rows = []
        for label, path, (ka, kb) in cases:
            reference = None
            for linear_path in paths:
                row = {
                    "case": label,
                    "path": linear_path,
                    "device": device if linear_path == "tiles" else "cpu",
                    "max_gb": max_gb,
                }
                try:
                    m, seconds, peak = _measure_rss(
                        lambda: cka_map(
                            CkaConfig(
                                path,
                                ts=(ka.t,),
                                bs=(ka.b, kb.b),
                                pools=(None,),
                                linear_path=linear_path,
                                device=row["device"],
                                max_bytes=int(max_gb * 2**30),
                                progress=False,
                            )
                        )
                    )
                except ValueError as e:
                    rows.append({**row, "skipped": str(e).split(";")[0]})
                    continue
                value = float(m.matrix[0, 1])
                reference = value if reference is None else reference
                rows.append(
                    {
                        **row,
                        "n": m.n,
                        "dims": [int(np.prod(_shape(path, k))) for k in (ka, kb)],
                        "cka": round(value, 8),
                        "seconds": round(seconds, 2),
                        "peak_rss_mb": round(peak / 2**20, 1),
                        "minus_first": value - reference,
                    }
                )
    return rows


def _shape(path, key) -> tuple[int, ...]:
    from extract.store.schema import FeatureStore

    return tuple(FeatureStore.open(path).array(key).shape[1:])


def format_full_maps(rows: list[dict]) -> str:
    lines = [f"{'case':<70} {'path':<8} {'s':>8} {'peak MB':>9}  CKA (minus the first path)"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['case']:<70} {r['path']:<8} skipped: {r['skipped']}")
        else:
            cost = f"{r['seconds']:>8.2f} {r['peak_rss_mb']:>9.0f}"
            lines.append(f"{r['case']:<70} {r['path']:<8} {cost}  {r['cka']:.6f} ({r['minus_first']:+.1e})")
    return "\n".join(lines)
