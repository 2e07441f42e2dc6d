"""Seeded augmented views of training images, so cached views can stand in for on-line augmentation.

The paper's heads were trained with a random crop covering 0.8-1.0 of the short side plus a
horizontal flip. Here view v of image i is drawn from a generator seeded by (seed, i, v) alone,
like the noise, so a cached view never depends on batching, workers or resume point.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
from PIL import Image

CROP_FRACTION = (0.8, 1.0)  # side of the square crop, as a fraction of the image's short side
TRAIN_SPLITS = ("train", "trainval")  # augmentation is for training splits; evaluation uses the center crop


def view_rng(seed: int, index: int, view: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"diffprobe-aug:{seed}:{index}:{view}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def crop_flip_box(width: int, height: int, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], bool]:
    """A square crop box (left, top, right, bottom) of side U(0.8, 1.0) x the short side at a
    uniform position, and whether to flip horizontally (p = 1/2)."""
    side = max(1, int(round(min(width, height) * rng.uniform(*CROP_FRACTION))))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    return (left, top, left + side, top + side), bool(rng.random() < 0.5)


def crop_flip(img: Image.Image, seed: int, index: int, view: int) -> Image.Image:
    """View `view` of image `index`: a seeded square crop and flip, before resizing to the model's size."""
    box, flip = crop_flip_box(img.size[0], img.size[1], view_rng(seed, index, view))
    img = img.crop(box)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else img


# name -> (image, seed, index, view) -> image; "none" is the plain center crop
AUGMENTATIONS: dict[str, Callable[[Image.Image, int, int, int], Image.Image] | None] = {
    "none": None,
    "crop-flip": crop_flip,
}


def check_augmentation(name: str, split: str) -> None:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    if name != "none" and split not in TRAIN_SPLITS:
        raise ValueError(f"--aug {name} is for training splits ({', '.join(TRAIN_SPLITS)}), not {split!r}: evaluation uses the center crop")
