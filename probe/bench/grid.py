"""`make bench-probe`: a grid of 16 linear heads against one head, on the same cache, one run.

A synthetic store (rows x dim float16, 1000 classes like ImageNet at b=24 pool 2) is
written to a temporary folder. Reported: the store read rate alone (the stream with no
training), the training rate of one head and of a 4 lr x 4 wd grid, and their ratio.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from extract.store.schema import FeatureKey, FeatureStore
from probe.grid import Grid, MemberSpec, TrainSettings, build_member, feature_set, train_grid
from probe.reader import FeatureReader, fit_standardizers, stream_batches

KEY = FeatureKey(150, 24, 2)

# the demo's scale (Fashion-MNIST, 10 classes, a 256-channel pool-2 map) and ImageNet's
# (b=24 pool 2: 4096 features, 1000 classes)
BENCH_SHAPES = {
    "demo": dict(rows=20000, dim=1024, classes=10, epochs=10),
    "imagenet": dict(rows=8192, dim=4096, classes=1000, epochs=1),
}


def synthetic_store(path: Path, rows: int, dim: int, classes: int, seed: int = 0) -> FeatureStore:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=rows)
    store = FeatureStore.create(
        path, row_shapes={KEY: (dim // 4, 2, 2)}, ids=[str(i) for i in range(rows)], labels=labels,
        index=np.arange(rows), shard_rows=2048, views=1, dtype="float16",
        attrs={"key": {"model": {"name": "bench"}}, "provenance": {"dataset": {"classes": [str(c) for c in range(classes)]}}},
    )  # fmt: skip
    for s in range(store.n_shards):
        span = store.shard_rows(s)
        x = rng.standard_normal((len(span), dim // 4, 2, 2), dtype=np.float32).astype(np.float16)
        store.write_shard(s, {KEY: x}, np.ones(len(span), bool))
    store.finish({})
    return store


def bench_probe(rows: int = 20000, dim: int = 4096, classes: int = 1000, epochs: int = 2, batch: int = 256) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "bench.zarr", rows, dim, classes)
        reader = FeatureReader(store, (KEY,))
        labels, mask = store.labels(), np.ones(rows, bool)
        norms = fit_standardizers(reader, mask)
        window = max(batch, (512 << 20) // reader.row_bytes())
        epochs_fn = lambda e: stream_batches(reader, mask, labels, batch=batch, window_rows=window, seed=0, epoch=e)  # noqa: E731
        started = time.perf_counter()
        read = sum(len(y) for e in range(epochs) for _, y in epochs_fn(e))
        read_rate = read / (time.perf_counter() - started)
        fs = feature_set((KEY,), {KEY: reader.row_shape(KEY)})
        settings = TrainSettings(epochs=epochs, batch_size=batch)
        runs = {}
        for label, lrs, wds in (("1 head", (1e-3,), (0.0,)), ("16 heads", (1e-4, 3e-4, 1e-3, 3e-3), (0.0, 1e-5, 1e-4, 1e-3))):
            specs = [MemberSpec("linear", (), fs, lr, wd) for lr in lrs for wd in wds]
            grid = Grid(specs, [fs], [build_member(s, classes, 0) for s in specs], settings)
            runs[label] = train_grid(grid, epochs_fn, rows // batch, norms, "cpu", progress=True)
        return {
            "rows": rows, "dim": dim, "classes": classes, "epochs": epochs, "batch": batch,
            "threads": torch.get_num_threads(), "store_mb": round(store.size_bytes() / 1e6, 1),
            "read_samples_per_s": round(read_rate, 1),
            "train": {k: {"seconds": round(v["seconds"], 2), "samples_per_s": round(v["samples_per_s"], 1)} for k, v in runs.items()},
            "grid16_over_one": round(runs["16 heads"]["seconds"] / runs["1 head"]["seconds"], 3),
        }  # fmt: skip


def format_table(r: dict) -> str:
    lines = [
        f"probe bench: {r['rows']} rows x {r['dim']} features (fp16, {r['store_mb']} MB), {r['classes']} classes, "
        f"{r['epochs']} epochs, batch {r['batch']}, {r['threads']} threads",
        f"  store read (stream only)   {r['read_samples_per_s']:>10.0f} samples/s",
    ]
    for label, v in r["train"].items():
        lines.append(f"  train {label:<20} {v['samples_per_s']:>10.0f} samples/s  ({v['seconds']:.1f} s)")
    lines.append(f"  16-head grid / one head    {r['grid16_over_one']:>10.2f}x time (16 separate runs: 16x)")
    return "\n".join(lines)
