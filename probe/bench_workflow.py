"""The whole workflow, timed both ways on the demo model (`python -m probe bench-workflow`).

On-line, as the paper's released code does: every step noises a batch afresh, runs the whole
U-Net (every block; only its output is skipped) and trains the linear head on the block's
activation, for every epoch. Cached, as diffprobe does: one early-exit extraction into a
store, then the same number of epochs of the same head on the cache. Same images, head,
optimizer (SGD, no momentum, lr 1e-2 divided by 10 every 7 epochs, as the paper's linear head),
batch size and device; the ratio of the two wall times is reported.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from extract.blocks import capture
from extract.data import preprocess, subset_indices
from extract.datasets import open_dataset
from extract.models import load_checkpoint, shipped_weights
from extract.noise import q_sample
from extract.pooling import pool
from extract.presets import get_preset
from extract.config import from_flat
from extract.run import ExtractConfig, extract
from extract.schema import FeatureKey, pool_label
from probe.grid import Grid, MemberSpec, TrainSettings, build_member, feature_set, train_grid
from extract.schema import open_complete
from probe.reader import FeatureReader, fit_standardizers, stream_batches


def bench_workflow(images: int = 2000, epochs: int = 28, t: int = 150, block: int = 24, pool_size: int | None = 2, batch: int = 64, seed: int = 0) -> dict:
    """Both ways at the paper's coordinates by default: t=150, b=24, adaptive average pool to 2x2."""
    preset = get_preset("demo-fmnist")
    settings = TrainSettings(epochs=epochs, batch_size=batch, optimizer="sgd", momentum=0.0, schedule="step", step_epochs=7, seed=seed)
    source = open_dataset("fashion-mnist", None, "train")
    rows = subset_indices(len(source), images, seed)
    labels = torch.from_numpy(source.labels[rows])

    # on-line: the U-Net (all blocks) on every image at every step
    model = load_checkpoint(preset, shipped_weights(preset))
    x_all = torch.stack([preprocess(source.load(int(i)), preset.image_size, preset.in_channels) for i in rows])
    started = time.perf_counter()
    head, opt, gen = None, None, torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(rows), generator=gen)
        for step in range(len(rows) // batch):
            idx = order[step * batch : (step + 1) * batch]
            eps = torch.randn(x_all[idx].shape, generator=gen)
            with torch.no_grad():  # the U-Net is frozen, as in the paper's code
                x_t = q_sample(preset, x_all[idx], t, eps)
                feats = pool(capture(model, x_t, torch.full((len(idx),), t), [block], stop_early=False)[block], pool_size)
            if head is None:
                head = torch.nn.Linear(feats[0].numel(), len(source.classes))
                opt = torch.optim.SGD(head.parameters(), lr=1e-2)
            for group in opt.param_groups:
                group["lr"] = 1e-2 * 0.1 ** (epoch // 7)
            loss = torch.nn.functional.cross_entropy(head(feats.flatten(1)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    online = time.perf_counter() - started

    # cached: one early-exit extraction, then the same epochs on the store
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        extract(from_flat(ExtractConfig, out=Path(tmp) / "s.zarr", model="demo-fmnist", ts=(t,), blocks=(block,), pools=(pool_size,), limit=images,
                              seed=seed, shard_rows=512, progress=False))  # fmt: skip
        extracted = time.perf_counter() - started
        store = open_complete(Path(tmp) / "s.zarr")
        key = FeatureKey(t, block, pool_size)
        reader = FeatureReader(store, (key,), preload=True)
        mask = np.ones(store.n_rows, bool)
        norms = fit_standardizers(reader, mask)
        fs = feature_set((key,), {key: reader.row_shape(key)})
        spec = MemberSpec("linear", (), fs, 1e-2, 0.0)
        grid = Grid([spec], [fs], [build_member(spec, len(source.classes), seed)], settings)
        epochs_fn = lambda e: stream_batches(reader, mask, store.labels(), batch=batch, window_rows=store.n_rows, seed=seed, epoch=e)  # noqa: E731
        started = time.perf_counter()
        train_grid(grid, epochs_fn, store.n_rows // batch, norms, "cpu", progress=False)
        trained = time.perf_counter() - started
    return {
        "images": images, "epochs": epochs, "t": t, "block": block, "pool": pool_size, "batch": batch, "threads": torch.get_num_threads(),
        "online_seconds": round(online, 2), "extract_seconds": round(extracted, 2), "cached_train_seconds": round(trained, 2),
        "online_over_cached": round(online / (extracted + trained), 2),
    }  # fmt: skip


def format_table(r: dict) -> str:
    return "\n".join([
        f"whole workflow, demo-fmnist, {r['images']} images, {r['epochs']} epochs, t={r['t']} b={r['block']} pool={pool_label(r.get('pool'))}, batch {r['batch']}, {r['threads']} threads",
        f"  on-line (full U-Net every step)     {r['online_seconds']:>8.1f} s",
        f"  diffprobe: extract once             {r['extract_seconds']:>8.1f} s",
        f"  diffprobe: {r['epochs']} epochs on the cache     {r['cached_train_seconds']:>8.1f} s",
        f"  on-line / diffprobe                 {r['online_over_cached']:>8.1f}x",
    ])  # fmt: skip
