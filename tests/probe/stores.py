"""Synthetic feature stores in the real schema, written without running a U-Net."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.store.schema import FeatureKey, FeatureStore

CLASSES = [f"class{i}" for i in range(4)]


def make_store(
    path: Path,
    features: dict[FeatureKey, np.ndarray],
    labels: np.ndarray,
    *,
    shard_rows: int = 64,
    views: int = 1,
    model: str = "tiny",
    preprocessing: str = "center-crop",
    split: str = "train",
    classes: list[str] | None = None,
    valid: np.ndarray | None = None,
    dtype: str = "float16",
    micro_batch: int = 4,
    device_type: str = "cpu",
    content: np.ndarray | None = None,
    ids: list[str] | None = None,
) -> FeatureStore:
    """A complete store holding the given rows: key -> (n, [V,] C, h, w)."""
    n = len(labels)
    classes = classes or [f"class{i}" for i in range(int(labels.max()) + 1)]
    key = {
        "model": {"name": model},
        "weights": {"random_init": True, "init_seed": 0},
        "preprocessing": preprocessing,
        "dtype": "fp32",
        "class_label": None,
        "micro_batch": micro_batch,
        "device_type": device_type,
        "seed": 0,
        "dataset": {"name": "synthetic", "split": split, "rows": n},
    }
    provenance = {"preset": model, "dataset": {"name": "synthetic", "split": split, "classes": classes}}
    shapes = {k: tuple(v.shape[2:] if views > 1 else v.shape[1:]) for k, v in features.items()}
    store = FeatureStore.create(
        path,
        row_shapes=shapes,
        ids=ids or [f"{split}/{i}" for i in range(n)],
        labels=labels,
        index=np.arange(n),
        shard_rows=shard_rows,
        views=views,
        dtype=dtype,
        attrs={"key": key, "provenance": provenance},
    )
    valid = np.ones(n, bool) if valid is None else valid
    for s in range(store.n_shards):
        rows = store.shard_rows(s)
        store.write_shard(
            s,
            {k: v[rows.start : rows.stop] for k, v in features.items()},
            valid[rows.start : rows.stop],
            content=None if content is None else content[rows.start : rows.stop],
        )
    store.finish({})
    return store


def blobs(
    n: int, classes: int, dim: int, seed: int, spread: float = 1.0, shape=None, views: int = 1, centres=None
):
    """Gaussian class clusters: (features (n, [V,] *shape), labels, centres)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    centres = rng.normal(size=(classes, dim)) * 3 if centres is None else centres
    shape = shape or (dim, 1, 1)
    rows = []
    for _ in range(views):
        rows.append((centres[labels] + spread * rng.normal(size=(n, dim))).reshape(n, *shape))
    x = np.stack(rows, axis=1) if views > 1 else rows[0]
    return x.astype(np.float16), labels, centres
