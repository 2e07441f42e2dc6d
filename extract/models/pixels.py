"""Raw pixels as a feature store: the no-model baseline, in the same schema.

The image goes through the same preprocessing as the U-Net's input (crop, resize,
[-1, 1]) and is stored whole as the one key t=0, b=0, pool=none, so the probe's
linear head and logistic regression run on pixels exactly as they do on features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from extract.data.selection import dataset_record, select_data
from extract.data.sources import PREPROCESSING, DataError, FeatureInput
from extract.store import progress
from extract.store.config import DataSelection, StoreOptions, json_roundtrip, option
from extract.store.provenance import provenance
from extract.store.schema import FeatureKey, FeatureStore
from extract.store.writer import StorePlan, write_store

PIXEL_KEY = FeatureKey(0, 0, None)


@dataclass(frozen=True)
class PixelConfig:
    store: StoreOptions
    selection: DataSelection = DataSelection()
    image_size: int = option(28, "image side in pixels, after extraction's center crop", min=1)
    channels: int = option(1, "image channels: 1 (grayscale) or 3 (RGB)", choices=(1, 3))
    seed: int = option(0, "seeds --limit")


# pixels have no model, weights or forward: what makes two pixel stores comparable
PIXEL_COMPATIBLE = ("model", "weights", "preprocessing")


def extract_pixels(cfg: PixelConfig) -> str:
    """Write (or resume) the preprocessed images of a split as a store; returns a summary line."""
    started = time.perf_counter()
    # the rows `extract run` takes with the same data arguments
    source, rows, dataset = select_data(cfg.selection, cfg.seed)
    key = {
        "model": {"name": "pixels", "image_size": cfg.image_size, "in_channels": cfg.channels},
        "weights": {"none": True},
        "preprocessing": PREPROCESSING,
        "dtype": "fp32",
        "class_label": None,
        "micro_batch": None,
        "device_type": "cpu",
        "seed": cfg.seed,
        "limit": cfg.selection.limit,
        "dataset": dataset,
    }
    made = provenance("pixels", "pixels", cfg, dataset_record(source, rows, dataset))
    plan = StorePlan(
        out=cfg.store.out,
        key=json_roundtrip(key),
        compatible=PIXEL_COMPATIBLE,
        provenance=made,
        row_shapes={PIXEL_KEY: (cfg.channels, cfg.image_size, cfg.image_size)},
        ids=[source.ids[i] for i in rows],
        labels=source.labels[rows],
        index=rows,
        shard_rows=cfg.store.shard_rows,
        overwrite=cfg.store.overwrite,
    )
    images = FeatureInput(source, cfg.image_size, cfg.channels)

    def fill(store: FeatureStore, shards: list[int]) -> int:
        total = sum(len(store.shard_rows(s)) for s in shards)
        with progress.bar(cfg.store.progress, total=total, unit="img", desc="pixels") as bar:
            for s in shards:
                span = store.shard_rows(s)
                batch, digests = [], []
                for i in rows[span.start : span.stop]:
                    _, x, error, digest = images[int(i)]
                    if error:
                        raise DataError(error)
                    batch.append(x.numpy())
                    digests.append(digest.numpy())
                    bar.update(1)
                store.write_shard(
                    s,
                    {PIXEL_KEY: np.stack(batch).astype(np.float16)},
                    np.ones(len(span), bool),
                    np.stack(digests),
                )
        return total

    written = write_store(plan, fill, started=started)
    size = f"{cfg.channels}x{cfg.image_size}x{cfg.image_size}"
    return f"{written.store}: {len(rows)} images as {size} pixels ({written.images} computed now)"
