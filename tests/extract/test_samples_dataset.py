"""Generated samples read as a dataset: an `extract sample` folder or its .npz, through the
same registry, preprocessing and store writer as real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from extract.data.registry import open_dataset
from extract.data.sources import DataError
from extract.generate.sample_folder import sample
from extract.generate.sampling import SampleConfig
from extract.models.pixels import PixelConfig, extract_pixels
from extract.store.config import DataSelection, StoreOptions
from extract.store.schema import FeatureKey, FeatureStore


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("samples") / "s"
    sample(
        SampleConfig(
            out=out, model="tiny", random_init=True, n=5, steps=2, shard_size=2, batch_size=2, progress=False
        )
    )
    return out


def test_a_samples_folder_and_its_npz_read_as_the_same_images(drawn):
    folder = open_dataset("samples", drawn, "all")
    npz = open_dataset("samples", next(drawn.glob("samples_*.npz")), "all")
    arr = np.load(next(drawn.glob("samples_*.npz")))["arr_0"]
    assert (
        len(folder) == len(npz) == 5 and folder.ids == npz.ids and folder.fingerprint() == npz.fingerprint()
    )
    assert folder.ids[0].endswith("/000000") and folder.classes == ["sample"] and not folder.labels.any()
    for i in range(5):
        a, b = np.asarray(folder.load(i)), np.asarray(npz.load(i))
        assert np.array_equal(a, b) and np.array_equal(a.reshape(arr[i].shape), arr[i])


def test_other_samples_have_another_fingerprint(drawn, tmp_path):
    other = tmp_path / "o"
    sample(
        SampleConfig(
            out=other,
            model="tiny",
            random_init=True,
            n=5,
            steps=2,
            seed=1,
            shard_size=2,
            batch_size=2,
            progress=False,
        )
    )
    assert (
        open_dataset("samples", other, "all").fingerprint()
        != open_dataset("samples", drawn, "all").fingerprint()
    )


def test_a_store_of_samples_holds_their_pixels(drawn, tmp_path):
    cfg = PixelConfig(
        selection=DataSelection(data="samples", data_root=drawn, split="all"),
        store=StoreOptions(out=tmp_path / "p.zarr", progress=False),
        image_size=32,
        channels=3,
    )
    extract_pixels(cfg)
    store = FeatureStore.open(tmp_path / "p.zarr")
    rows = np.asarray(store.array(FeatureKey(0, 0, None))[:])
    assert rows.shape == (5, 3, 32, 32) and store.attrs["key"]["dataset"]["name"] == "samples"


def test_unfinished_or_foreign_samples_are_one_line(drawn, tmp_path):
    with pytest.raises(DataError, match="needs --data-root"):
        open_dataset("samples", None, "all")
    with pytest.raises(DataError, match="has splits all"):
        open_dataset("samples", drawn, "train")
    half = tmp_path / "half"
    half.mkdir()
    (half / "samples.json").write_text(json.dumps({"key": {}, "complete": False}))
    with pytest.raises(DataError, match="not finished"):
        open_dataset("samples", half, "all")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(DataError, match="no arr_0"):
        open_dataset("samples", bad, "all")
    with pytest.raises(DataError, match="samples not found"):
        open_dataset("samples", tmp_path / "nowhere", "all")
