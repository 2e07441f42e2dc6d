"""`python -m probe bench-batches`: how many classes a training batch holds, for a class-sorted
store and for one written with `extract run --order shuffled`, against an i.i.d. sampler.

ImageNet's train split lists images class by class. The probe reads whole chunks ("blocks")
in a seeded order and shuffles rows within windows of about --buffer-mb / 2, so on a
class-sorted store a batch draws from the few classes of the blocks in its window. A store
written in a seeded row order mixes classes in every block. The store here has ImageNet's
class structure (1000 classes, 1,300 rows each) and its block size at b=24 pool 2 (4096 fp16
features: a 4 MiB chunk is 512 rows, so a 65,536-row window is 128 blocks); only the labels
matter, so the features are 16 zeros a row, in 512-row shards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from extract.store.schema import FeatureKey, FeatureStore
from probe.reader import FeatureReader, stream_batches

KEY = FeatureKey(150, 24, 2)


def iid_distinct(classes: int, batch: int) -> float:
    """Expected distinct classes in a batch drawn i.i.d. from `classes` equally frequent classes."""
    return classes * (1 - (1 - 1 / classes) ** batch)


def label_store(path: Path, labels: np.ndarray, dim: int, shard_rows: int) -> FeatureStore:
    """A store whose rows carry the given labels (features all zero)."""
    store = FeatureStore.create(
        path,
        row_shapes={KEY: (dim // 4, 2, 2)},
        ids=[str(i) for i in range(len(labels))],
        labels=labels,
        index=np.arange(len(labels)),
        shard_rows=shard_rows,
        views=1,
        dtype="float16",
        attrs={"key": {"model": {"name": "bench"}}, "provenance": {}},
    )
    zeros = np.zeros((shard_rows, dim // 4, 2, 2), np.float16)
    for s in range(store.n_shards):
        span = store.shard_rows(s)
        store.write_shard(s, {KEY: zeros[: len(span)]}, np.ones(len(span), bool))
    store.finish({})
    return store


def distinct_per_batch(
    store: FeatureStore, batch: int, window_rows: int, seed: int = 0, max_batches: int = 200
) -> float:
    """Mean number of distinct classes in the first max_batches batches of epoch 0."""
    reader = FeatureReader(store, (KEY,))
    labels = store.labels()
    counts = []
    for _, y in stream_batches(
        reader,
        np.ones(store.n_rows, bool),
        labels,
        batch=batch,
        window_rows=window_rows,
        seed=seed,
        epoch=0,
        prefetch=False,
    ):
        counts.append(len(np.unique(y)))
        if len(counts) == max_batches:
            break
    return float(np.mean(counts))


def bench_batches(
    classes: int = 1000,
    per_class: int = 1300,
    dim: int = 16,
    batch: int = 256,
    window_rows: int = 65536,
    shard_rows: int = 512,
    seed: int = 0,
) -> dict:
    sorted_labels = np.repeat(np.arange(classes), per_class)
    shuffled = sorted_labels[np.random.default_rng(seed).permutation(len(sorted_labels))]
    out = {
        "classes": classes,
        "rows": len(sorted_labels),
        "batch": batch,
        "window_rows": window_rows,
        "iid": round(iid_distinct(classes, batch), 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, labels in (("class_sorted", sorted_labels), ("shuffled_order", shuffled)):
            out[name] = round(
                distinct_per_batch(
                    label_store(Path(tmp) / f"{name}.zarr", labels, dim, shard_rows), batch, window_rows, seed
                ),
                1,
            )
    return out


def format_table(r: dict) -> str:
    return "\n".join(
        [
            f"distinct classes per batch of {r['batch']}, {r['classes']} classes, {r['rows']:,} rows, "
            f"window {r['window_rows']:,} rows",
            f"  i.i.d. sampler (expected)          {r['iid']:>7.1f}",
            f"  class-sorted store                 {r['class_sorted']:>7.1f}  "
            f"({100 * r['class_sorted'] / r['iid']:.0f}% of i.i.d.)",
            f"  store written --order shuffled     {r['shuffled_order']:>7.1f}  "
            f"({100 * r['shuffled_order'] / r['iid']:.0f}% of i.i.d.)",
        ]
    )
