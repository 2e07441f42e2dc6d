import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from extract.data.sources import (
    FASHION_MNIST_SYSTEM_DIR,
    DataError,
    center_crop,
    fashion_mnist,
    hdf5,
    imagefolder,
    preprocess,
)

SYSTEM_FMNIST = FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz"


def test_preprocess_scales_to_minus_one_one_and_replicates_grayscale():
    img = Image.new("L", (28, 28), 255)
    x = preprocess(img, 32, 3)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x, torch.ones_like(x))
    assert torch.allclose(preprocess(Image.new("L", (28, 28), 0), 32, 3), -torch.ones(3, 32, 32))


def test_center_crop_keeps_the_centre_and_the_size():
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 0, 0), (100, 0, 200, 100))  # the middle third is red
    out = center_crop(img, 32)
    assert out.size == (32, 32)
    arr = np.asarray(out)
    assert arr[:, 4:28, 0].min() > 200 and arr[:, 4:28, 2].max() < 30


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("P", None, None),
        ("I;16", 65535, (255, 255, 255)),
    ],
)
def test_unusual_modes_load_as_rgb(mode, value, expected):
    if mode == "P":
        img = Image.new("RGB", (8, 8), (200, 100, 50)).convert("P")
        expected = np.asarray(img.convert("RGB"))[0, 0]
    else:
        img = Image.new(mode, (8, 8), value)
    x = preprocess(img, 8, 3)
    assert torch.allclose((x[:, 0, 0] + 1) * 127.5, torch.tensor(expected, dtype=torch.float32), atol=0.6)


def test_imagefolder_lists_classes_and_relative_ids(image_folder):
    src = imagefolder(image_folder, "train")
    assert src.classes == ["cat", "dog"]
    assert src.ids[0] == "cat/0.png" and list(src.labels) == [0, 0, 0, 1, 1, 1]
    assert src.load(4).size == (50, 36)


def test_imagefolder_missing_root_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        imagefolder(tmp_path / "nope", "train")


def test_a_split_without_its_folder_is_an_error_never_the_root(image_folder):
    """Reading the root for a missing split would put the same images in train and test."""
    with pytest.raises(
        DataError,
        match=r"no test/ folder in .* \(it holds: train\); expected layout: ROOT/<split>/<class>/<image>",
    ):
        imagefolder(image_folder, "test")
    flat = image_folder / "train"  # ROOT/<class>/<image>: the whole folder is split "all", and only that
    assert imagefolder(flat, "all").classes == ["cat", "dog"] and len(imagefolder(flat, "all").ids) == 6
    with pytest.raises(DataError, match="no train/ folder"):
        imagefolder(flat, "train")


def test_hdf5_source(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.full((4, 10, 12, 3), 7, dtype=np.uint8)
        f["labels"] = np.array([0, 1, 1, 0])
    src = hdf5(path, "train")
    assert len(src) == 4 and list(src.labels) == [0, 1, 1, 0] and src.classes == ["0", "1"]
    assert np.asarray(src.load(2)).shape == (10, 12, 3)


def test_hdf5_with_wrong_dtype_is_refused(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4), dtype=np.float32)
        f["labels"] = np.array([0, 1])
    with pytest.raises(DataError, match="must be uint8"):
        hdf5(path, "train")


@pytest.mark.parametrize("shape", [(2**28, 32, 32), (2, 2**15, 2**15)])
def test_hdf5_with_a_huge_declared_shape_is_refused_without_reading(tmp_path, shape):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:  # chunked and never written: the file stays tiny
        f.create_dataset("images", shape=shape, dtype=np.uint8, chunks=(1, 32, 32))
        f.create_dataset("labels", shape=(shape[0],), dtype=np.int64, chunks=(min(shape[0], 1024),))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataError, match="declares an implausible shape"):
        hdf5(path, "train")


def test_fashion_mnist_idx(fmnist_dir):
    src = fashion_mnist(fmnist_dir, "test")
    assert len(src) == 32 and src.classes[9] == "Ankle boot" and src.ids[3] == "test/3"
    assert np.asarray(src.load(0)).shape == (28, 28)
    with pytest.raises(DataError, match="splits 'train' and 'test'"):
        fashion_mnist(fmnist_dir, "val")


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    monkeypatch.setattr("extract.data.sources.FASHION_MNIST_SYSTEM_DIR", Path(tmp_path / "none"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(None, "train")


@pytest.mark.skipif(
    not SYSTEM_FMNIST.exists() and not os.environ.get("CI"),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_the_real_fashion_mnist_package(monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    train, test = fashion_mnist(None, "train"), fashion_mnist(None, "test")
    assert len(train) == 60_000 and len(test) == 10_000
    assert np.bincount(train.labels).tolist() == [6000] * 10
