"""Cached views against on-line training at matched optimizer steps, on the demo model
(`python -m probe bench-workflow`).

Five arms train the same heads with diffssl's optimizer (SGD without momentum or weight decay,
lr divided by 10 at each quarter of training; lr 1e-2 linear, 5e-2 attention, batch 64) for the
same number of steps over the same training images:

- on-line, crop+flip+noise: every epoch a fresh guided-diffusion crop and flip of every image
  and fresh noise, the U-Net in the loop, as diffssl trains;
- on-line, noise: the center crop, fresh noise every epoch (separates noise from crop);
- cached, K = 1, 4, 8 views: K crops, flips and noise draws written once by `extract run
  --aug gd-crop-flip --views K` (K = 1: center crop, one noise draw); each epoch reads one
  view per image.

On-line epoch e draws exactly what the cache stores as view e (the same augmentation and noise
functions, seeded by (seed, image, view)), so the arms differ only in how many distinct views
training sees. Two heads learn from one stream per arm: linear on the whole map, and diffssl's
attention head at a width that fits a CPU. A validation curve (training images held out,
center crop) shows convergence; the test split is scored once, at the end. Each seed redraws
the images, views, noise, head initialisation and batch order. The U-Net stops at the block
read (the features are the same as the whole forward's); the whole forward's rate is measured
in the same run and given apart.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from extract.data.augment import AUGMENTATIONS
from extract.data.registry import open_dataset
from extract.data.sources import preprocess, to_mode
from extract.models.adm import load_checkpoint, shipped_weights
from extract.models.adm_blocks import capture
from extract.models.adm_presets import get_preset
from extract.models.noise import draw_noise, q_sample
from extract.run import extract
from extract.store.config import ExtractConfig, from_flat
from extract.store.schema import FeatureKey, open_complete
from probe.config import TrainSettings
from probe.grid import Grid, MemberSpec, build_member, feature_set, predict_grid, train_grid
from probe.heads import parse_head_options
from probe.reader import FeatureReader, Standardizer, eval_batches, stream_batches

MODEL = "demo-fmnist"
T_95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
}  # two-sided t quantiles by degrees of freedom


@dataclass(frozen=True)
class WorkflowSettings:
    images: int = 2000  # training images per seed (a seeded subset of Fashion-MNIST train)
    val_images: int = 1000  # held out from the same draw: the convergence curve
    test_images: int = 10000  # Fashion-MNIST test, center crop, one noise draw: reported once
    t: int = 10  # the demo's own best point (extract/weights/MODEL_CARD.md): b=9, 64x8x8
    block: int = 9
    epochs: int = 48  # the same for every arm, so the same steps: epochs x (images // batch)
    batch: int = 64
    views: tuple[int, ...] = (1, 4, 8)
    online: tuple[str, ...] = ("crop+flip+noise", "noise")
    seeds: tuple[int, ...] = (0, 1, 2)
    aug: str = "gd-crop-flip"
    attention: tuple[str, ...] = (
        "width=128",
        "prepool=4",
    )  # diffssl's head; 1024 wide it trains at ~100 images/s here
    curve_every: int = 4  # epochs between validation points

    @property
    def steps(self) -> int:
        return self.epochs * (self.images // self.batch)


HEADS = {"linear": 1e-2, "paper-attention": 5e-2}  # diffssl's learning rates
ONLINE_AUG = {"crop+flip+noise": True, "noise": False}  # does the arm crop and flip?


def _extract(out: Path, s: WorkflowSettings, *, split: str, images: int, views: int, seed: int) -> float:
    started = time.perf_counter()
    extract(
        from_flat(
            ExtractConfig,
            out=out,
            model=MODEL,
            data="fashion-mnist",
            split=split,
            ts=(s.t,),
            blocks=(s.block,),
            pools=(None,),
            limit=images,
            views=views,
            aug=s.aug if views > 1 else "none",
            seed=seed,
            progress=False,
        )
    )
    return time.perf_counter() - started


def held_out(n_rows: int, val_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, validation mask) over a store's rows: a seeded draw of val_images rows."""
    val = np.zeros(n_rows, bool)
    val[np.random.default_rng([seed, 0x7A1]).permutation(n_rows)[:val_images]] = True
    return ~val, val


def build_grid(s: WorkflowSettings, key: FeatureKey, shape: tuple[int, ...], classes: int, seed: int) -> Grid:
    """Both heads on the one key, diffssl's optimizer and step schedule, s.epochs long."""
    fs = feature_set((key,), {key: shape})
    options = {"linear": (), "paper-attention": tuple(sorted(parse_head_options(s.attention).items()))}
    specs = [MemberSpec(h, options[h], fs, lr, 0.0) for h, lr in HEADS.items()]
    settings = TrainSettings(
        epochs=s.epochs,
        batch_size=s.batch,
        optimizer="sgd",
        momentum=0.0,
        schedule="step",
        step_epochs=max(1, s.epochs // 4),
        seed=seed,
    )
    return Grid(specs, [fs], [build_member(spec, classes, seed) for spec in specs], settings)


def _top1(grid: Grid, reader: FeatureReader, mask: np.ndarray, labels: np.ndarray, norms) -> list[float]:
    top, truth = predict_grid(grid, eval_batches(reader, mask, labels), norms, torch.device("cpu"), k=1)
    return [round(100.0 * float((top[:, m, 0] == truth).mean()), 2) for m in range(top.shape[1])]


def online_batches(
    model,
    preset,
    source,
    rows: np.ndarray,
    labels: np.ndarray,
    key: FeatureKey,
    *,
    augment,
    batch: int,
    seed: int,
    epoch: int,
):
    """One on-line epoch: a shuffled order; each image as the cache would store its view
    `epoch` (augment(img, seed, index, epoch) or the center crop, noise of view `epoch`).
    Yields ({key: (batch, C, h, w) float16}, labels), as the store's batches."""
    order = np.random.default_rng([seed, epoch, 23]).permutation(len(rows))
    size, channels = preset.image_size, preset.in_channels
    for step in range(len(rows) // batch):
        pick = order[step * batch : (step + 1) * batch]
        index = [int(i) for i in rows[pick]]
        if augment is None:
            x0 = torch.stack([preprocess(source.load(i), size, channels) for i in index])
        else:
            x0 = torch.stack(
                [
                    preprocess(
                        augment(to_mode(source.load(i), channels), seed, i, epoch, size), size, channels
                    )
                    for i in index
                ]
            )
        eps = draw_noise(tuple(x0.shape[1:]), seed, index, key.t, epoch)
        with torch.inference_mode():
            feats = capture(
                model, q_sample(preset, x0, key.t, eps), torch.full((len(index),), key.t), [key.b]
            )[key.b]
        yield {key: feats.float().numpy().astype(np.float16)}, labels[pick]


def forward_rates(s: WorkflowSettings, model, preset) -> dict:
    """Images/s of the U-Net forward to block b and of the whole forward, at the benchmark's batch."""
    x = torch.randn(s.batch, preset.in_channels, preset.image_size, preset.image_size)
    steps, out = torch.full((s.batch,), s.t), {}
    for name, early in (("to_block", True), ("whole", False)):
        with torch.inference_mode():
            capture(model, x, steps, [s.block], stop_early=early)
            started = time.perf_counter()
            for _ in range(4):
                capture(model, x, steps, [s.block], stop_early=early)
        out[name] = round(4 * s.batch / (time.perf_counter() - started), 1)
    return out


class _Curve:
    """Validation top-1 of every head every few epochs (and after the last)."""

    def __init__(
        self,
        s: WorkflowSettings,
        grid: Grid,
        reader: FeatureReader,
        mask: np.ndarray,
        labels: np.ndarray,
        norms,
    ):
        self.s, self.grid, self.reader, self.mask, self.labels, self.norms, self.points = (
            s,
            grid,
            reader,
            mask,
            labels,
            norms,
            [],
        )

    def __call__(self, epoch: int) -> None:
        if (epoch + 1) % self.s.curve_every == 0 or epoch + 1 == self.s.epochs:
            step = (epoch + 1) * (self.s.images // self.s.batch)
            self.points.append([step, *_top1(self.grid, self.reader, self.mask, self.labels, self.norms)])


def _run_seed(
    s: WorkflowSettings, seed: int, tmp: Path, test: FeatureReader, model, preset, source
) -> list[dict]:
    key = FeatureKey(s.t, s.block, None)
    base = tmp / f"s{seed}_v1.zarr"
    seconds = {1: _extract(base, s, split="train", images=s.images + s.val_images, views=1, seed=seed)}
    val_reader = FeatureReader(open_complete(base), (key,), preload=True)
    store = val_reader.store
    train_mask, val_mask = held_out(store.n_rows, s.val_images, seed)
    labels, classes = store.labels().astype(np.int64), len(store.classes()) or int(store.labels().max()) + 1
    shape = val_reader.row_shape(key)
    norms = {key: Standardizer.identity(int(np.prod(shape)))}  # raw features, as diffssl
    arms = []

    def train(name: str, views: int | None, batches, extract_seconds: float) -> None:
        grid = build_grid(s, key, shape, classes, seed)
        curve = _Curve(s, grid, val_reader, val_mask, labels, norms)
        timing = train_grid(
            grid, batches, s.images // s.batch, norms, torch.device("cpu"), progress=False, after_epoch=curve
        )
        test_top1 = _top1(grid, test, test.store.valid(), test.store.labels().astype(np.int64), norms)
        arms.append(
            {
                "arm": name,
                "views": views,
                "seed": seed,
                "steps": timing["samples"] // s.batch,
                "extract_seconds": round(extract_seconds, 2),
                "train_seconds": round(timing["seconds"], 2),
                "curve": curve.points,
                "test_top1": dict(zip(HEADS, test_top1)),
            }
        )

    rows, index = np.flatnonzero(train_mask), store.index()
    for arm in s.online:
        augment = AUGMENTATIONS[s.aug] if ONLINE_AUG[arm] else None
        train(
            f"on-line, {arm}",
            None,
            lambda e, a=augment: online_batches(
                model,
                preset,
                source,
                index[rows],
                labels[rows],
                key,
                augment=a,
                batch=s.batch,
                seed=seed,
                epoch=e,
            ),
            0.0,
        )
    for k in s.views:
        path = base if k == 1 else tmp / f"s{seed}_v{k}.zarr"
        if k != 1:
            seconds[k] = _extract(path, s, split="train", images=s.images + s.val_images, views=k, seed=seed)
        reader = val_reader if k == 1 else FeatureReader(open_complete(path), (key,), preload=True)
        if not np.array_equal(reader.store.index(), index):
            raise RuntimeError(f"the {k}-view store holds other images than the 1-view store")
        train(
            f"cached, {k} view{'s' if k > 1 else ''}",
            k,
            lambda e, r=reader: stream_batches(
                r,
                train_mask,
                labels,
                batch=s.batch,
                window_rows=store.n_rows,
                seed=seed,
                epoch=e,
                prefetch=False,
            ),
            seconds[k],
        )
    return arms


def interval(values: list[float]) -> dict:
    """Mean, sample standard deviation and the two-sided 95% t interval's half-width."""
    n, mean = len(values), float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if n > 1 else float("nan")
    half = T_95.get(n - 1, 1.96) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": round(mean, 2), "sd": round(sd, 2), "ci95": round(half, 2), "values": values}


def summarize(arms: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(a["arm"] for a in arms):
        runs = [a for a in arms if a["arm"] == name]
        total = [a["extract_seconds"] + a["train_seconds"] for a in runs]
        out.append(
            {
                "arm": name,
                "views": runs[0]["views"],
                "seeds": [a["seed"] for a in runs],
                "steps": sorted({a["steps"] for a in runs}),
                "test_top1": {h: interval([a["test_top1"][h] for a in runs]) for h in HEADS},
                "last_val_top1": {
                    h: interval([a["curve"][-1][1 + i] for a in runs]) for i, h in enumerate(HEADS)
                },
                "seconds_per_seed": round(float(np.mean(total)), 1),
            }
        )
    return out


def bench_workflow(s: WorkflowSettings = WorkflowSettings(), progress=None) -> dict:
    """Every arm for every seed; `progress(text)` is told when each seed starts."""
    preset = get_preset(MODEL)
    model, source = (
        load_checkpoint(preset, shipped_weights(preset)),
        open_dataset("fashion-mnist", None, "train"),
    )
    arms = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        test_seconds = _extract(tmp / "test.zarr", s, split="test", images=s.test_images, views=1, seed=0)
        test = FeatureReader(
            open_complete(tmp / "test.zarr"), (FeatureKey(s.t, s.block, None),), preload=True
        )
        rates = forward_rates(s, model, preset)
        for seed in s.seeds:
            if progress:
                progress(f"seed {seed}")
            arms.extend(_run_seed(s, seed, tmp, test, model, preset, source))
    online = [a for a in arms if a["views"] is None]
    return {
        "model": MODEL,
        "settings": {**asdict(s), "steps": s.steps},
        "heads": {h: {"lr": lr} for h, lr in HEADS.items()},
        "threads": torch.get_num_threads(),
        "test_rows": test.store.n_rows,
        "test_extract_seconds": round(test_seconds, 2),
        "forward_images_per_s": rates,
        "online_images": s.steps * s.batch,
        "whole_unet_online_seconds_estimate": round(s.steps * s.batch / rates["whole"], 1)
        if online
        else None,
        "summary": summarize(arms),
        "runs": arms,
    }


def format_table(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"{r['model']} t={s['t']} b={s['block']} (whole map), {s['images']} training images, "
        f"{s['steps']} steps of batch {s['batch']} "
        f"for every arm, {len(s['seeds'])} seeds, {r['test_rows']} test images, {r['threads']} threads",
        f"  {'arm':<28} {'linear test':>18} {'attention test':>18} {'s per seed':>11}",
    ]
    for a in r["summary"]:
        cells = [f"{a['test_top1'][h]['mean']:.2f} +- {a['test_top1'][h]['ci95']:.2f}" for h in HEADS]
        lines.append(f"  {a['arm']:<28} {cells[0]:>18} {cells[1]:>18} {a['seconds_per_seed']:>11.1f}")
    lines.append(
        "  (mean +- half-width of the 95% t interval over seeds; time: extraction + training of both heads)"
    )
    rates = r["forward_images_per_s"]
    lines.append(
        f"  U-Net forward: {rates['to_block']} images/s to b={s['block']}, {rates['whole']} images/s whole"
    )
    return "\n".join(lines)
