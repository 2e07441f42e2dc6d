"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped inside the package:
a second small dataset that needs no download.

Each 8x8 image (ink 0..16) is scaled to 0..255 and upsampled to 32x32 (the demo model's size)
with PIL's bicubic filter, so it reads like Fashion-MNIST: a bright shape on a dark ground.
The split is fixed: within each class, a permutation seeded by `SPLIT_SEED` puts every fifth
image (by position in that permutation) in test and the rest in train. An image's id is its
index in `load_digits()` (`digits/<index>`), so a store records which image it holds, and the
content digests the stores keep give each image's pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from extract.data.sources import DataError, ImageSource

SPLITS = ("train", "test")
SPLIT_SEED = 0
TEST_EVERY = 5
SIZE = 32
LAYOUT = "none: read from scikit-learn's package (sklearn.datasets.load_digits); --data-root is ignored"
OFFICIAL = {"train": 1433, "test": 364}


def split_rows(labels: np.ndarray, split: str) -> np.ndarray:
    """The indices of `split` (ascending): per class, a seeded permutation, every fifth to test."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[::TEST_EVERY]] = True
    return np.flatnonzero(test if split == "test" else ~test)


def upsample(image: np.ndarray) -> Image.Image:
    """An 8x8 array of ink 0..16 -> a 32x32 grayscale image (0..255, bicubic)."""
    pixels = np.round(image.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((SIZE, SIZE), Image.BICUBIC)


def digits(root: Path | None, split: str) -> ImageSource:
    if split not in SPLITS:
        raise DataError(f"digits has splits 'train' and 'test', not {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images, bunch.target.astype(np.int64)
    rows = split_rows(labels, split)
    return ImageSource(
        "digits",
        split,
        "sklearn.datasets.load_digits",
        [f"digits/{i}" for i in rows],
        labels[rows],
        [str(c) for c in range(10)],
        lambda i: upsample(images[rows[i]]),
    )
