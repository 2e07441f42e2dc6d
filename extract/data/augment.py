"""Seeded augmented views of training images, so cached views can stand in for on-line augmentation.

- `gd-crop-flip`: what diffssl's training loader draws (guided-diffusion's `random_crop_arr` and
  random flip): the short side resized to a random integer size in [S, ceil(S / 0.8)] ([256, 320]
  for the 256 px models; box halving first, then bicubic), a random S x S crop, a horizontal flip
  with p = 1/2.
- `crop-flip`: a square crop of U(0.8, 1.0) x the short side at a uniform position and a flip,
  resized to S afterwards by the center-crop preprocessing.

View v of image i is drawn from a generator seeded by (seed, i, v) alone, like the noise, so a
cached view never depends on batching, workers or resume point. An augmentation takes the image
(already grayscale or RGB) and the model's input size S.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable

import numpy as np
from PIL import Image

CROP_FRACTION = (0.8, 1.0)  # side of the square crop, as a fraction of the image's short side
TRAIN_SPLITS = ("train", "trainval")  # augmentation is for training splits; evaluation uses the center crop


def view_rng(seed: int, index: int, view: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"diffprobe-aug:{seed}:{index}:{view}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def crop_flip_box(
    width: int, height: int, rng: np.random.Generator
) -> tuple[tuple[int, int, int, int], bool]:
    """A square crop box (left, top, right, bottom) of side U(0.8, 1.0) x the short side at a
    uniform position, and whether to flip horizontally (p = 1/2)."""
    side = max(1, int(round(min(width, height) * rng.uniform(*CROP_FRACTION))))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    return (left, top, left + side, top + side), bool(rng.random() < 0.5)


def crop_flip(img: Image.Image, seed: int, index: int, view: int, size: int = 0) -> Image.Image:
    """View `view` of image `index`: a seeded square crop and flip, before resizing to the model's size."""
    box, flip = crop_flip_box(img.size[0], img.size[1], view_rng(seed, index, view))
    img = img.crop(box)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else img


GD_CROP_FRACTION = 0.8  # guided-diffusion's random_crop_arr: min_crop_frac (max_crop_frac is 1.0)


def gd_short_sides(size: int) -> tuple[int, int]:
    """The range (inclusive) of the short side before the crop: [ceil(S / 1.0), ceil(S / 0.8)]."""
    return size, math.ceil(size / GD_CROP_FRACTION)


def gd_crop_flip(img: Image.Image, seed: int, index: int, view: int, size: int) -> Image.Image:
    """View `view` of image `index` as diffssl's training loader draws it: a S x S image."""
    rng = view_rng(seed, index, view)
    lo, hi = gd_short_sides(size)
    short = int(rng.integers(lo, hi + 1))
    while min(img.size) >= 2 * short:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.Resampling.BOX)
    scale = short / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.Resampling.BICUBIC)
    top = int(rng.integers(0, img.size[1] - size + 1))
    left = int(rng.integers(0, img.size[0] - size + 1))
    img = img.crop((left, top, left + size, top + size))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


# name -> (image, seed, index, view, size) -> image; "none" is the plain center crop
AUGMENTATIONS: dict[str, Callable[[Image.Image, int, int, int, int], Image.Image] | None] = {
    "none": None,
    "crop-flip": crop_flip,
    "gd-crop-flip": gd_crop_flip,
}


def check_augmentation(name: str, split: str) -> None:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    if name != "none" and split not in TRAIN_SPLITS:
        raise ValueError(
            f"--aug {name} is for training splits ({', '.join(TRAIN_SPLITS)}), not {split!r}: "
            "evaluation uses the center crop"
        )
