"""The guided-diffusion random crop that diffssl trains with, as a seeded view: checked against a
plain NumPy version of guided-diffusion's `random_crop_arr` given the same draws."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from extract.data.augment import gd_crop_flip, gd_short_sides, view_rng


def reference(img: Image.Image, size: int, short: int, top: int, left: int, flip: bool) -> np.ndarray:
    """guided-diffusion's random_crop_arr and random flip, with the random numbers given."""
    while min(*img.size) >= 2 * short:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = short / min(*img.size)
    arr = np.array(img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC))
    arr = arr[top : top + size, left : left + size]
    return arr[:, ::-1] if flip else arr


def draws(seed: int, index: int, view: int, size: int, image: Image.Image) -> tuple[int, int, int, bool]:
    rng = view_rng(seed, index, view)
    lo, hi = gd_short_sides(size)
    short = int(rng.integers(lo, hi + 1))
    w, h = image.size
    scaled = image
    while min(scaled.size) >= 2 * short:
        scaled = scaled.resize(tuple(x // 2 for x in scaled.size))
    sw, sh = (round(x * short / min(scaled.size)) for x in scaled.size)
    top, left = int(rng.integers(0, sh - size + 1)), int(rng.integers(0, sw - size + 1))
    return short, top, left, bool(rng.random() < 0.5)


def test_the_view_is_guided_diffusions_random_crop_with_the_seeded_draws():
    rng = np.random.default_rng(0)
    for w, h in ((700, 530), (300, 420), (256, 256)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for view in range(6):
            got = np.asarray(gd_crop_flip(img, 3, 17, view, 256))
            assert got.shape == (256, 256, 3)
            np.testing.assert_array_equal(got, reference(img, 256, *draws(3, 17, view, 256, img)))


def test_views_cover_the_short_sides_of_256_to_320_and_depend_on_seed_index_and_view():
    assert gd_short_sides(256) == (256, 320) and gd_short_sides(32) == (32, math.ceil(32 / 0.8))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 80), dtype=np.uint8))
    sides = {draws(0, i, v, 32, img)[0] for i in range(40) for v in range(8)}
    assert sides == set(range(32, 41))
    a = np.asarray(gd_crop_flip(img, 0, 5, 2, 32))
    assert np.array_equal(a, np.asarray(gd_crop_flip(img, 0, 5, 2, 32)))
    assert not np.array_equal(a, np.asarray(gd_crop_flip(img, 0, 5, 3, 32))) and not np.array_equal(
        a, np.asarray(gd_crop_flip(img, 1, 5, 2, 32))
    )
