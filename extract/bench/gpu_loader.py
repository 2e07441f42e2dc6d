"""Whether JPEG decoding keeps up with the GPU: DataLoader passes over synthetic photo-like
JPEGs, with the project's preprocessing, for each worker count."""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from extract.bench.gpu_config import GpuBenchConfig
from extract.bench.gpu_setup import validate
from extract.data.sources import FeatureInput, imagefolder
from extract.models.adm_presets import ModelPreset


@dataclass(frozen=True)
class LoaderRow:
    workers: int
    images: int
    seconds: float
    images_per_s: float
    errors: int


def write_jpegs(root: Path, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """n photo-like JPEGs (smooth colour waves plus noise, quality 90) in root/train/synthetic/."""
    folder = root / "train" / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        fx, fy, phase = rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05), rng.uniform(0, 6.3)
        wave = np.sin(xx * fx + yy * fy + phase)[..., None] * rng.uniform(30, 90, 3).astype(np.float32)
        noise = rng.integers(-20, 21, size=(h, w, 3), dtype=np.int16)
        pixels = np.clip(rng.uniform(60, 190, 3).astype(np.float32) + wave + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def time_loader(root: Path, preset: ModelPreset, workers: int, batch: int, pin_memory: bool) -> LoaderRow:
    """One pass of a DataLoader over the JPEGs with the project's preprocessing, worker start included."""
    dataset = FeatureInput(imagefolder(root, "train"), preset.image_size, preset.in_channels)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, pin_memory=pin_memory
    )
    images = errors = 0
    start = time.perf_counter()
    for _, x, reasons, _ in loader:
        images += x.shape[0]
        errors += sum(bool(r) for r in reasons)
    seconds = time.perf_counter() - start
    return LoaderRow(workers, images, seconds, images / seconds, errors)


def bench_loader(cfg: GpuBenchConfig, root: Path | None = None) -> list[LoaderRow]:
    """Decode rate (images/s) for each worker count, over cfg.loader_images synthetic JPEGs."""
    preset, device = validate(cfg)
    if cfg.loader_images == 0:
        return []
    with (
        tempfile.TemporaryDirectory(prefix="diffprobe-jpegs-")
        if root is None
        else nullcontext(root) as folder
    ):
        folder = write_jpegs(Path(folder), cfg.loader_images, cfg.jpeg_size, cfg.seed)
        return [
            time_loader(folder, preset, w, cfg.loader_batch, device.type == "cuda")
            for w in cfg.loader_workers
        ]
