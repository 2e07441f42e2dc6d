"""Shared fixtures: tiny datasets written to tmp_path, and a helper to run extraction."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract.run import extract
from extract.store.config import ExtractConfig, from_flat

# the tiers' rules: child processes only in slow tests; a fast run touches every module
pytest_plugins = ["tests.tiers"]


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> Path:
    """A Fashion-MNIST look-alike in the official IDX layout: 96 train and 32 test images,
    each class a different bright rectangle (so features are class-dependent)."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 32)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c : 8 + 2 * c, 4:24] = 200 + c * 5
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return root


@pytest.fixture
def fmnist_env(fmnist_dir, monkeypatch) -> Path:
    monkeypatch.setenv("FASHION_MNIST_DIR", str(fmnist_dir))
    return fmnist_dir


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """root/train/<class>/<i>.png: 2 classes x 3 images of different sizes and modes."""
    root = tmp_path / "folder"
    for c, name in enumerate(("cat", "dog")):
        d = root / "train" / name
        d.mkdir(parents=True)
        for i in range(3):
            size = (40 + 10 * i, 36)
            colour = (40 * (c + 1), 30 * i, 200)
            Image.new("RGB", size, colour).save(d / f"{i}.png")
    return root


def tiny_config(out: Path, **overrides) -> ExtractConfig:
    base = dict(
        out=out,
        model="tiny",
        random_init=True,
        data="fashion-mnist",
        split="train",
        ts=(10, 300),
        blocks=(3, 7),
        pools=(1, 2, None),
        shard_rows=16,
        micro_batch=4,
        batch_size=8,
        progress=False,
    )
    base.update(overrides)
    return from_flat(ExtractConfig, **base)


def run_tiny(out: Path, **overrides):
    return extract(tiny_config(out, **overrides))
