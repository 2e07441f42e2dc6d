"""scikit-learn's digits as a registry dataset: the split, the pixels and a store made from it."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

from extract.cli import cli
from extract.data import digits
from extract.data.registry import DATASETS, open_dataset
from extract.store.schema import FeatureStore


def test_the_split_is_fixed_disjoint_stratified_and_covers_every_image():
    labels = load_digits().target
    train, test = (digits.split_rows(labels, s) for s in digits.SPLITS)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels) == 1797
    assert {s: len(r) for s, r in zip(digits.SPLITS, (train, test))} == DATASETS["digits"].official
    per_class, test_per_class = np.bincount(labels), np.bincount(labels[test])
    # every fifth of each class's permutation: ceil(n / 5) per class
    assert np.array_equal(test_per_class, -(-per_class // 5))
    again = digits.split_rows(labels, "test")
    assert np.array_equal(again, test) and np.all(np.diff(test) > 0)


def test_images_are_the_8x8_pixels_scaled_and_upsampled():
    bunch = load_digits()
    src = open_dataset("digits", None, "test")
    index = int(src.ids[3].split("/")[1])
    assert src.labels[3] == bunch.target[index]
    img = src.load(3)
    assert img.mode == "L" and img.size == (32, 32)
    # a plain reference: scale 0..16 to 0..255, round, then PIL's bicubic resize
    small = Image.fromarray(np.round(bunch.images[index] * 255 / 16).astype(np.uint8))
    assert np.array_equal(np.asarray(img), np.asarray(small.resize((32, 32), Image.BICUBIC)))
    # downsampled back by box averaging, the image keeps the digit's ink where the 8x8 has it
    back = np.asarray(img, dtype=np.float64).reshape(8, 4, 8, 4).mean((1, 3))
    assert np.corrcoef(back.ravel(), bunch.images[index].ravel())[0, 1] > 0.9


def test_a_store_of_digits_records_the_ids_labels_and_each_images_digest(tmp_path):
    args = ["run", "--model", "tiny", "--random-init", "--data", "digits", "--split", "train"]
    args += ["--limit", "12", "-t", "10", "-b", "1", "--pool", "1", "--micro-batch", "4"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "s.zarr"), "--no-progress"])
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "s.zarr")
    src = open_dataset("digits", None, "train")
    assert store.complete and store.n_rows == 12 and store.attrs["key"]["dataset"]["name"] == "digits"
    assert all(src.labels[src.ids.index(i)] == y for i, y in zip(store.ids(), store.labels()))
    contents = np.asarray(store.group["content"])
    assert contents.shape == (12, 16) and len({bytes(c) for c in contents}) == 12


def test_a_bad_split_is_one_line():
    result = CliRunner().invoke(cli, ["check-data", "--data", "digits", "--split", "val", "--no-progress"])
    assert result.exit_code != 0 and "digits has splits train, test, not 'val'" in result.output
