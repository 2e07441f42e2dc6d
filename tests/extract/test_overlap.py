"""Pixel digests per image, and the check that no image sits in two splits unless allowed."""

import hashlib
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from analysis.cli import cli as analysis_cli
from extract.cli import cli as extract_cli
from extract.data.sources import content_digest, imagefolder
from extract.store.errors import DataError
from extract.store.overlap import check_overlap, shared_images
from extract.store.schema import FeatureKey, FeatureStore
from probe.cli import cli as probe_cli
from tests.probe.stores import blobs, make_store


def picture(path, seed, size=(20, 18), mode="RGB"):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.fixture
def leaky_folder(tmp_path):
    """train/ and test/ of two classes; test/b/copy.png is train/a/0.png under another name and class."""
    root = tmp_path / "images"
    for split, seeds in (("train", range(0, 6)), ("test", range(10, 14))):
        for k in seeds:
            picture(root / split / ("a" if k % 2 == 0 else "b") / f"{k}.png", k)
    shutil.copy(root / "train" / "a" / "0.png", root / "test" / "b" / "copy.png")
    return root


def pixels(root, split, out):
    result = CliRunner().invoke(
        extract_cli,
        [
            "pixels",
            "--data",
            "imagefolder",
            "--data-root",
            str(root),
            "--split",
            split,
            "--image-size",
            "8",
            "--channels",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return FeatureStore.open(out)


def test_the_digest_is_blake2b_of_mode_size_and_pixels():
    img = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    plain = hashlib.blake2b(b"L 4x3\n" + np.asarray(img).tobytes(), digest_size=16).digest()
    assert content_digest(img).tobytes() == plain
    assert content_digest(img.convert("RGB")).tobytes() != plain  # same values, other pixels
    other = np.arange(12, dtype=np.uint8).reshape(3, 4)
    other[0, 0] = 1
    assert content_digest(Image.fromarray(other)).tobytes() != plain


def test_a_store_records_each_images_digest(tmp_path, leaky_folder):
    store = pixels(leaky_folder, "test", tmp_path / "test.zarr")
    source = imagefolder(leaky_folder, "test")
    expected = np.stack([content_digest(source.load(int(i))) for i in store.index()])
    assert np.array_equal(store.content_hashes(), expected)


def test_an_extraction_records_digests_whatever_the_batch_size(tmp_path, leaky_folder):
    stores = []
    for batch in (2, 4):
        out = tmp_path / f"b{batch}.zarr"
        result = CliRunner().invoke(
            extract_cli,
            [
                "run",
                "--model",
                "tiny",
                "--random-init",
                "--data",
                "imagefolder",
                "--data-root",
                str(leaky_folder),
                "--split",
                "train",
                "-t",
                "10",
                "-b",
                "2",
                "--pool",
                "1",
                "--micro-batch",
                "2",
                "--batch-size",
                str(batch),
                "--out",
                str(out),
                "--no-progress",
            ],
        )
        assert result.exit_code == 0, result.output
        stores.append(FeatureStore.open(out))
    source = imagefolder(leaky_folder, "train")
    expected = np.stack([content_digest(source.load(int(i))) for i in stores[0].index()])
    assert np.array_equal(stores[0].content_hashes(), expected)
    assert np.array_equal(stores[1].content_hashes(), expected)


def test_shared_images_are_found_by_pixels_not_by_name(tmp_path, leaky_folder):
    train, test = (
        pixels(leaky_folder, "train", tmp_path / "train.zarr"),
        pixels(leaky_folder, "test", tmp_path / "test.zarr"),
    )
    found = shared_images(train, test)
    assert found.checked and found.shared == 1 and found.examples == (("a/0.png", "b/copy.png"),)
    with pytest.raises(DataError, match=r"share 1 images \(e.g. a/0.png = b/copy.png\).*--allow-overlap"):
        check_overlap(train, test, allow=False)
    assert check_overlap(train, test, allow=True).record()["shared"] == 1
    clean = imagefolder(leaky_folder, "test")
    assert len(clean) == 5  # the copy is one of the test images; without it nothing is shared
    (leaky_folder / "test" / "b" / "copy.png").unlink()
    again = pixels(leaky_folder, "test", tmp_path / "test2.zarr")
    assert shared_images(train, again).shared == 0


def test_stores_without_digests_are_reported_unchecked(tmp_path):
    x, y, _ = blobs(32, 4, 4, seed=0, shape=(4, 1, 1))
    key = FeatureKey(10, 1, 1)
    a, b = (
        make_store(tmp_path / "a.zarr", {key: x}, y),
        make_store(tmp_path / "b.zarr", {key: x}, y, split="test"),
    )
    found = check_overlap(a, b, allow=False)
    assert not found.checked and "not checked" in found.line


def test_probe_refuses_a_test_split_sharing_images_unless_allowed(tmp_path, leaky_folder):
    pixels(leaky_folder, "train", tmp_path / "train.zarr")
    pixels(leaky_folder, "test", tmp_path / "test.zarr")
    args = [
        "train",
        "--train",
        str(tmp_path / "train.zarr"),
        "--test",
        str(tmp_path / "test.zarr"),
        "--head",
        "logreg",
        "--val-fraction",
        "0.34",
        "--results",
        str(tmp_path / "results"),
        "--no-progress",
    ]
    refused = CliRunner().invoke(probe_cli, args)
    text = refused.output.strip()
    assert refused.exit_code != 0 and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert "train (train.zarr) and test (test.zarr) share 1 images" in text and "--allow-overlap" in text
    allowed = CliRunner().invoke(probe_cli, [*args, "--allow-overlap", "--name", "leaky"])
    assert allowed.exit_code == 0, allowed.output
    import json

    result = json.loads((tmp_path / "results" / "leaky.json").read_text())
    assert any("share 1 images" in w for w in result["warnings"])
    assert result["overlap"] == [
        {
            "stores": "train (train.zarr) and test (test.zarr)",
            "checked": True,
            "shared": 1,
            "examples": [["a/0.png", "b/copy.png"]],
        }
    ]
    # the saved head knows its training store: evaluating it on the leaky store is refused too
    head = tmp_path / "results" / "leaky.head.pt"
    ev = CliRunner().invoke(probe_cli, ["eval", "--head", str(head), "--store", str(tmp_path / "test.zarr")])
    assert ev.exit_code != 0 and "share 1 images" in ev.output
    ev = CliRunner().invoke(
        probe_cli, ["eval", "--head", str(head), "--store", str(tmp_path / "test.zarr"), "--allow-overlap"]
    )
    assert ev.exit_code == 0, ev.output


def test_analysis_fd_refuses_stores_sharing_images_unless_allowed(tmp_path, leaky_folder):
    pixels(leaky_folder, "train", tmp_path / "train.zarr")
    pixels(leaky_folder, "test", tmp_path / "test.zarr")
    args = [
        "fd",
        "--real",
        str(tmp_path / "train.zarr"),
        "--fake",
        str(tmp_path / "test.zarr"),
        "--pr-rows",
        "4",
        "--k",
        "1",
    ]
    refused = CliRunner().invoke(analysis_cli, args)
    assert refused.exit_code != 0 and "share 1 images" in refused.output and "Traceback" not in refused.output
    allowed = CliRunner().invoke(analysis_cli, [*args, "--allow-overlap"])
    assert allowed.exit_code == 0 and "1 images in both stores" in allowed.output, allowed.output
