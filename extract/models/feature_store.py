"""A feature network's image-level features as a store: what Fréchet distance and precision and
recall read (`analysis fd`, and `analysis fid`, which chains this and `fd`).

The images are read as extraction reads them (extract's center crop to `image_size`, grayscale
or RGB) and kept as uint8; the network's own preprocessing (Inception's resize to 299, the
classifier's [-1, 1], ImageNet's normalisation) is the feature family's (extract.models.
feature_nets). A store holds one key, t0/b0/full, of shape (d,), in float32: the features as the
network computes them, so statistics read from the store are those of the network's output.

Batches are padded to `batch_size` images and start at multiples of it, so a store's bytes do
not depend on its shard size or on where a run resumed; `batch_size` is part of the key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.data.selection import dataset_record, select_data
from extract.data.sources import GRAY_MODES, PREPROCESSING, DataError, ImageSource, center_crop, to_mode
from extract.models.feature_nets import Extractor, FeatureSpec, build_extractor
from extract.store import progress
from extract.store.config import DataSelection, StoreOptions, json_roundtrip, option
from extract.store.provenance import provenance
from extract.store.schema import CHANNEL_WORDS, FeatureKey, FeatureStore
from extract.store.writer import StorePlan, write_store

FEATURE_KEY = FeatureKey(0, 0, None)
HALVES = ("first", "second")
IMAGE_PREPROCESSING = PREPROCESSING.rsplit(";", 1)[0] + " (kept as uint8)"
# what makes two feature stores comparable: the same network and weights on images prepared alike
FEATURE_COMPATIBLE = ("model", "weights", "preprocessing", "micro_batch")


@dataclass(frozen=True)
class FeatureStoreConfig:
    store: StoreOptions
    selection: DataSelection = DataSelection(split="test")
    features: str = option(
        "inception",
        "inception | inception-logits | classifier:FILE | classifier-logits:FILE | torchvision:resnet50 "
        "| torchvision:vit_b_16 | pixels (extract.models.feature_nets)",
    )
    inception_weights: Path | None = option(
        None, "torch-fidelity's weights-inception-2015-12-05-6726825d.pth (never downloaded)"
    )
    weights: Path | None = option(None, "a torchvision state_dict, for --features torchvision:*")
    random_init: bool = option(False, "random network weights: a pipeline check, not an FID")
    device: str = option("cpu", "cpu, cuda, cuda:1 ...")
    image_size: int | None = option(
        None, "[default: the network's input size, else the images' own (one size)]", min=1
    )
    channels: int | None = option(
        None, "[default: the network's, else the first image's (grayscale or RGB)]", choices=(1, 3)
    )
    half: str | None = option(
        None,
        "one half of a seeded permutation of the rows (the floor of a Fréchet distance)",
        choices=HALVES,
    )
    batch_size: int = option(100, "images per forward (part of the store key)", min=1)
    seed: int = option(0, "seeds --limit and --half")


def feature_spec(cfg: FeatureStoreConfig) -> FeatureSpec:
    return FeatureSpec(
        cfg.features, cfg.inception_weights, cfg.weights, cfg.random_init, cfg.device, cfg.seed
    )


def _rows(cfg: FeatureStoreConfig) -> tuple[ImageSource, np.ndarray, dict]:
    source, rows, dataset = select_data(cfg.selection, cfg.seed)
    if cfg.half is not None:
        if cfg.half not in HALVES:
            raise ValueError(f"--half must be one of {', '.join(HALVES)}, got {cfg.half!r}")
        order = np.random.default_rng(cfg.seed).permutation(rows)
        cut = len(order) // 2
        rows = np.sort(order[:cut] if cfg.half == "first" else order[cut : 2 * cut])
        dataset = {**dataset, "rows": len(rows), "half": f"{cfg.half} (seed {cfg.seed})"}
    if len(rows) < 2:
        raise ValueError(
            f"{cfg.selection.data} {cfg.selection.split}: {len(rows)} images selected; "
            "statistics need at least 2"
        )
    return source, rows, dataset


def _image_kind(
    source: ImageSource, rows: np.ndarray, cfg: FeatureStoreConfig, net: Extractor
) -> tuple[int, int]:
    """(size, channels) the images are read at: the options', else, for a dataset, the network's
    input; else the first image's. Samples are compared as they are, so a network that needs
    another size or kind refuses them rather than converting them."""
    first = source.load(int(rows[0]))
    as_they_are = cfg.selection.data == "samples"
    size = cfg.image_size or (None if as_they_are else net.size)
    if size is None:
        if first.size[0] != first.size[1]:
            raise ValueError(
                f"{source.location}: images are {first.size[0]}x{first.size[1]}; give --image-size"
            )
        size = first.size[0]
    channels = (
        cfg.channels or (None if as_they_are else net.channels) or (1 if first.mode in GRAY_MODES else 3)
    )
    if net.channels is not None and channels != net.channels:
        raise ValueError(
            f"{net.name} features take {CHANNEL_WORDS[net.channels]} images; "
            f"these are {CHANNEL_WORDS[channels]}"
        )
    if net.size is not None and size != net.size:
        raise ValueError(f"{net.name} features take {net.size}x{net.size} images; these are {size}x{size}")
    return size, channels


def images_record(
    cfg: FeatureStoreConfig, source: ImageSource, rows: np.ndarray, size: int, channels: int
) -> dict:
    """What the images were, as `analysis fid` reports each side."""
    sel = cfg.selection
    record = {
        "kind": "dataset",
        "data": sel.data,
        "split": sel.split,
        "data_opts": list(sel.data_opts),
        "limit": sel.limit,
        "seed": cfg.seed,
        "half": cfg.half,
        "images": int(len(rows)),
        "fingerprint": source.fingerprint(),
        "preprocessing": IMAGE_PREPROCESSING,
        "image_size": size,
        "channels": channels,
    }
    if sel.data == "samples":
        record["path"] = str(sel.data_root)
    return record


def extract_features(cfg: FeatureStoreConfig) -> str:
    """Write (or resume) the network's features of the selected images as a store; returns a summary line."""
    started = time.perf_counter()
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {cfg.batch_size}")
    source, rows, dataset = _rows(cfg)
    net = build_extractor(feature_spec(cfg))
    size, channels = _image_kind(source, rows, cfg, net)
    dim = net.dim if net.dim > 0 else size * size * channels
    weights = {k: net.record[k] for k in ("weights", "sha256", "init_seed") if k in net.record}
    key = {
        "model": {"name": net.name, **{k: v for k, v in net.record.items() if k not in weights}},
        "weights": weights,
        "preprocessing": f"{IMAGE_PREPROCESSING} at {size}x{size}, {CHANNEL_WORDS[channels]}",
        "dtype": "fp32",
        "class_label": None,
        "micro_batch": cfg.batch_size,
        "device_type": cfg.device.split(":")[0],
        "seed": cfg.seed,
        "limit": cfg.selection.limit,
        "dataset": dataset,
    }
    made = provenance(
        "features",
        net.name,
        cfg,
        dataset_record(source, rows, dataset),
        weights=weights,
        images=images_record(cfg, source, rows, size, channels),
        features=net.record,
    )
    plan = StorePlan(
        out=cfg.store.out,
        key=json_roundtrip(key),
        compatible=FEATURE_COMPATIBLE,
        provenance=made,
        row_shapes={FEATURE_KEY: (dim,)},
        ids=[source.ids[i] for i in rows],
        labels=source.labels[rows],
        index=rows,
        shard_rows=cfg.store.shard_rows,
        dtype="float32",
        overwrite=cfg.store.overwrite,
    )

    def read(i: int) -> np.ndarray:
        try:
            img = source.load(int(i))
        except (OSError, ValueError) as e:
            raise DataError(f"{source.location}: image {source.ids[int(i)]} cannot be read ({e})") from None
        if cfg.selection.data == "samples" and img.size != (size, size):
            raise DataError(
                f"{source.location}: sample {source.ids[int(i)]} is {img.size[0]}x{img.size[1]}, "
                f"the first is {size}x{size}"
            )
        return np.asarray(center_crop(to_mode(img, channels), size)).reshape(size, size, channels)

    def fill(store: FeatureStore, shards: list[int]) -> int:
        total = sum(len(store.shard_rows(s)) for s in shards)
        with progress.bar(cfg.store.progress, total=total, unit="img", desc=f"{net.name} features") as bar:
            for s in shards:
                span = store.shard_rows(s)
                out = np.empty((len(span), dim), np.float32)
                # batches at multiples of batch_size, whatever the shard size
                for a in range(span.start - span.start % cfg.batch_size, span.stop, cfg.batch_size):
                    lo, hi = max(a, span.start), min(a + cfg.batch_size, span.stop)
                    # zero rows pad the store's last batch
                    x = np.zeros((cfg.batch_size, size, size, channels), np.uint8)
                    # the whole batch, so its images are the same whichever shard asks
                    for j in range(a, min(a + cfg.batch_size, len(rows))):
                        x[j - a] = read(rows[j])
                    feats = net(x)
                    out[lo - span.start : hi - span.start] = feats[lo - a : hi - a]
                    bar.update(hi - lo)
                store.write_shard(s, {FEATURE_KEY: out}, np.ones(len(span), bool))
        return total

    written = write_store(plan, fill, started=started)
    return (
        f"{written.store}: {len(rows)} images, {net.name} features ({dim}) at {size}x{size} "
        f"{CHANNEL_WORDS[channels]} ({written.images} computed now)"
    )
