"""Cached views against on-line training, in accuracy and wall time, on the demo model
(`python -m probe bench-workflow`).

The same linear head is trained with the paper's recipe (`--recipe paper`: SGD without momentum,
lr 1e-2 divided by 10 every 7 epochs, 28 epochs, raw features, all training rows) four ways:

- on-line, as the paper's released code does: at every step a fresh crop and flip of each
  image, fresh noise, and the whole U-Net (every block; only its output layer skipped);
- from the cache with one view (center crop, one noise draw per image);
- from the cache with K views (`--aug crop-flip --views K`): each epoch draws one of the K
  cached crops and noise draws of every image.

Every way uses the same images, head initialisation, optimizer and batch stream code (the probe's
own `train_grid`, fed either from the U-Net or from the store), and is scored on one test store
(center crop, one noise draw). Wall time counts extraction for the cached ways and the U-Net in
the loop for the on-line way; the test store's extraction, the same for all, is reported apart.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from extract.data.augment import crop_flip_box
from extract.data.registry import open_dataset
from extract.data.sources import preprocess, subset_indices
from extract.models.adm import load_checkpoint, shipped_weights
from extract.models.adm_blocks import capture
from extract.models.adm_presets import get_preset
from extract.models.noise import q_sample
from extract.models.pooling import pool
from extract.run import extract
from extract.store.config import ExtractConfig, from_flat
from extract.store.schema import FeatureKey, open_complete, pool_label
from probe.config import ProbeConfig
from probe.grid import Grid, MemberSpec, build_member, feature_set, predict_grid, train_grid
from probe.metrics import accuracy
from probe.reader import FeatureReader, eval_batches, fit_standardizers
from probe.recipes import probe_config
from probe.run import probe

MODEL = "demo-fmnist"


def _extract(out: Path, *, split: str, images: int, t: int, block: int, pool_size: int | None, views: int, seed: int) -> float:
    started = time.perf_counter()
    extract(from_flat(ExtractConfig, out=out, model=MODEL, data="fashion-mnist", split=split, ts=(t,), blocks=(block,), pools=(pool_size,),
                      limit=images, views=views, aug="crop-flip" if views > 1 else "none", seed=seed, progress=False))  # fmt: skip
    return time.perf_counter() - started


def _paper_config(train: Path, test: Path, results: Path, name: str, epochs: int, batch: int, seed: int) -> ProbeConfig:
    return probe_config("paper", train=train, test=test, heads=("linear",), epochs=epochs, batch_size=batch, seed=seed,
                        results=results, name=name, progress=False)  # fmt: skip


def online_batches(model, preset, source, rows: np.ndarray, labels: np.ndarray, key: FeatureKey, *, batch: int, seed: int, epoch: int):
    """One epoch of on-line batches, as the paper's code makes them: a shuffled order, and for
    every image at every step a fresh crop (0.8-1.0 of the short side) and flip, fresh noise,
    and the whole U-Net. Yields ({key: (batch, C, h, w) float16}, labels), like the store."""
    rng = np.random.default_rng([seed, epoch, 23])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    order = rng.permutation(len(rows))
    for step in range(len(rows) // batch):
        idx = order[step * batch : (step + 1) * batch]
        images = []
        for i in idx:
            img = source.load(int(rows[i]))
            box, flip = crop_flip_box(img.size[0], img.size[1], rng)
            img = img.crop(box)
            images.append(preprocess(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else img, preset.image_size, preset.in_channels))
        x0 = torch.stack(images)
        with torch.no_grad():  # the U-Net is frozen, as in the paper's code
            x_t = q_sample(preset, x0, key.t, torch.randn(x0.shape, generator=gen))
            feats = pool(capture(model, x_t, torch.full((len(idx),), key.t), [key.b], stop_early=False)[key.b], key.pool)
        yield {key: feats.numpy().astype(np.float16)}, labels[idx]


def train_online(test_store: Path, *, images: int, epochs: int, key: FeatureKey, batch: int, seed: int) -> tuple[float, float]:
    """The on-line way: (test top-1 %, wall seconds of training)."""
    preset = get_preset(MODEL)
    source = open_dataset("fashion-mnist", None, "train")
    rows = subset_indices(len(source), images, seed)
    labels = source.labels[rows].astype(np.int64)
    model = load_checkpoint(preset, shipped_weights(preset))
    store = open_complete(test_store)
    reader = FeatureReader(store, (key,), preload=True)
    norms = fit_standardizers(reader, store.valid(), enabled=False)  # raw features, as the paper's recipe
    fs = feature_set((key,), {key: reader.row_shape(key)})
    cfg = _paper_config(test_store, test_store, test_store.parent, "online", epochs, batch, seed)  # for its training settings and lr
    lr = dict(cfg.head_lrs)["linear"]
    spec = MemberSpec("linear", (), fs, lr, 0.0)
    grid = Grid([spec], [fs], [build_member(spec, len(source.classes), seed)], cfg.training)
    started = time.perf_counter()
    train_grid(grid, lambda e: online_batches(model, preset, source, rows, labels, key, batch=batch, seed=seed, epoch=e),
               len(rows) // batch, norms, torch.device("cpu"), progress=False)  # fmt: skip
    seconds = time.perf_counter() - started
    top, truth = predict_grid(grid, eval_batches(reader, store.valid(), store.labels()), norms, torch.device("cpu"))
    return accuracy(top[:, 0], truth)["top1"], seconds


def bench_workflow(images: int = 3000, test_images: int = 2000, epochs: int = 28, t: int = 150, block: int = 24, pool_size: int | None = 2,
                   batch: int = 128, views: tuple[int, ...] = (1, 4, 8), online: bool = True, seed: int = 0) -> dict:  # fmt: skip
    """All four ways at the paper's coordinates by default: t=150, b=24, adaptive average pool to 2x2."""
    key = FeatureKey(t, block, pool_size)
    ways = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        test_seconds = _extract(tmp / "test.zarr", split="test", images=test_images, t=t, block=block, pool_size=pool_size, views=1, seed=seed)
        if online:
            top1, seconds = train_online(tmp / "test.zarr", images=images, epochs=epochs, key=key, batch=batch, seed=seed)
            ways.append({"way": "on-line (fresh crop, flip and noise every step; whole U-Net)", "views": None,
                         "extract_seconds": 0.0, "train_seconds": round(seconds, 2), "test_top1": round(top1, 2)})  # fmt: skip
        for k in views:
            store = tmp / f"train_v{k}.zarr"
            extracted = _extract(store, split="train", images=images, t=t, block=block, pool_size=pool_size, views=k, seed=seed)
            started = time.perf_counter()
            result = probe(_paper_config(store, tmp / "test.zarr", tmp / "results", f"v{k}", epochs, batch, seed))
            trained = time.perf_counter() - started
            ways.append({"way": f"cached, {k} view{'s' if k > 1 else ''}" + (" (--aug crop-flip)" if k > 1 else " (center crop)"), "views": k,
                         "extract_seconds": round(extracted, 2), "train_seconds": round(trained, 2), "test_top1": round(result["test"]["top1"], 2)})  # fmt: skip
    for w in ways:
        w["total_seconds"] = round(w["extract_seconds"] + w["train_seconds"], 2)
    out = {"model": MODEL, "images": images, "test_images": test_images, "epochs": epochs, "t": t, "block": block, "pool": pool_size,
           "batch": batch, "recipe": "paper", "seed": seed, "threads": torch.get_num_threads(), "test_extract_seconds": round(test_seconds, 2),
           "ways": ways}  # fmt: skip
    if online and len(ways) > 1:
        out["online_over_cached_1_view"] = round(ways[0]["total_seconds"] / ways[1]["total_seconds"], 2)
    return out


def format_table(r: dict) -> str:
    head = (f"{r['model']}, {r['images']} training / {r['test_images']} test images, t={r['t']} b={r['block']} pool={pool_label(r['pool'])}, "
            f"linear head, recipe {r['recipe']} ({r['epochs']} epochs, batch {r['batch']}), {r['threads']} threads")  # fmt: skip
    lines = [head, f"  {'way':<62} {'extract s':>9} {'train s':>9} {'total s':>9} {'test top-1':>10}"]
    for w in r["ways"]:
        lines.append(f"  {w['way']:<62} {w['extract_seconds']:>9.1f} {w['train_seconds']:>9.1f} {w['total_seconds']:>9.1f} {w['test_top1']:>10.2f}")
    lines.append(f"  (test store, the same for every way: {r['test_extract_seconds']:.1f} s to extract)")
    if "online_over_cached_1_view" in r:
        lines.append(f"  on-line / cached with 1 view, wall time: {r['online_over_cached_1_view']:.1f}x")
    return "\n".join(lines)
