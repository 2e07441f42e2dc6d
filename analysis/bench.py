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


def bench_cka(sizes=(2000, 10000, 50000), dim: int = 256, block: int = 4096, gram_limit_gb: float = 6.0, seed: int = 0) -> list[dict]:
    rows = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, dim)).astype(np.float32)
        y = (x @ rng.standard_normal((dim, dim)).astype(np.float32) + rng.standard_normal((n, dim)).astype(np.float32))

        def streamed():
            m = CrossMoments([dim, dim])
            for a in range(0, n, block):
                m.add([x[a : a + block], y[a : a + block]])
            return linear_cka_from_moments(m, 0, 1)

        s_value, s_time, s_peak = _measure(streamed)
        row = {"n": n, "dim": dim, "streamed_seconds": round(s_time, 3), "streamed_peak_mb": round(s_peak / 2**20, 1), "cka": round(s_value, 6)}
        gram_bytes = 5 * 8 * n * n  # K, L, their centred copies and a product
        if gram_bytes / 2**30 <= gram_limit_gb:
            g_value, g_time, g_peak = _measure(lambda: linear_cka_gram(x, y))
            row.update(gram_seconds=round(g_time, 3), gram_peak_mb=round(g_peak / 2**20, 1), gram_minus_streamed=float(g_value - s_value))
        else:
            row.update(gram_seconds=None, gram_peak_mb=None, gram_skipped=f"needs about {gram_bytes / 2**30:.0f} GiB")
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'n':>7} {'streamed s':>11} {'streamed MB':>12} {'gram s':>8} {'gram MB':>9}  agreement"]
    for r in rows:
        gram_s = "-" if r["gram_seconds"] is None else f"{r['gram_seconds']:.2f}"
        gram_mb = r.get("gram_skipped", "-") if r["gram_peak_mb"] is None else f"{r['gram_peak_mb']:.0f}"
        agree = f"{r['gram_minus_streamed']:+.1e}" if "gram_minus_streamed" in r else "-"
        lines.append(f"{r['n']:>7} {r['streamed_seconds']:>11.2f} {r['streamed_peak_mb']:>12.1f} {gram_s:>8} {gram_mb:>9}  {agree}")
    return "\n".join(lines)
