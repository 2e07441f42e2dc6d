"""Stores written by an earlier diffprobe (schema version 1), committed under tests/fixtures/stores,
still open, resume, verify and probe, and today's code writes the same values for them (new stores
drop zstd, so not the same bytes: their feature arrays are read from the shard files directly, the
old ones through zarr).

They were made with the tiny preset, random weights, on the fake Fashion-MNIST of
tests/conftest.py (train: 24 images, test: 12; t=10, b=7, pool 1, 2 and the full map)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from extract.store.schema import FeatureKey, FeatureStore
from tests.conftest import run_tiny

SAMPLES = Path(__file__).resolve().parent / "fixtures" / "stores"
KEYS = [FeatureKey(10, 7, None), FeatureKey(10, 7, 1), FeatureKey(10, 7, 2)]  # the stored order


def sample(split: str) -> Path:
    return SAMPLES / f"tiny-random_fashion-mnist_{split}_v1.zarr"


def same_run(out: Path, split: str):
    return run_tiny(
        out,
        split=split,
        ts=(10,),
        blocks=(7,),
        pools=(1, 2, None),
        limit=24 if split == "train" else 12,
        shard_rows=8,
    )


@pytest.mark.parametrize("split,rows", [("train", 24), ("test", 12)])
def test_a_version_1_store_opens_with_its_keys_rows_and_labels(split, rows):
    store = FeatureStore.open(sample(split))
    assert store.complete and store.n_rows == rows and store.keys() == KEYS
    assert store.array(FeatureKey(10, 7, None)).shape == (rows, 64, 8, 8)
    assert (store.labels() == store.index() % 10).all()  # the fake data's label is its index mod 10


def test_a_version_1_store_resumes_with_nothing_to_redo_and_equals_a_fresh_run(tmp_path, fmnist_env):
    copy = tmp_path / "old.zarr"
    shutil.copytree(sample("train"), copy)
    summary = same_run(copy, "train")
    assert summary.images == 0 and summary.shards_done == summary.shards_total
    fresh = same_run(tmp_path / "fresh.zarr", "train")
    assert fresh.images == 24
    old, new = FeatureStore.open(copy), FeatureStore.open(tmp_path / "fresh.zarr")
    for key in KEYS:
        # equal up to fp16 rounding: CPU kernels round differently with other thread counts and
        # instruction sets, so bit-identity holds on one machine and setting, not across them
        np.testing.assert_allclose(
            old.array(key)[:].astype(np.float32), new.array(key)[:].astype(np.float32), rtol=2e-2, atol=2e-3
        )


def test_a_version_1_store_verifies_and_probes(tmp_path):
    from extract.store.verify import verify_store
    from probe.grid import TrainSettings
    from probe.run import ProbeConfig, probe

    for split in ("train", "test"):
        shutil.copytree(sample(split), tmp_path / f"{split}.zarr")
        assert verify_store(tmp_path / f"{split}.zarr") == []
    result = probe(
        ProbeConfig(
            train=tmp_path / "train.zarr",
            test=tmp_path / "test.zarr",
            results=tmp_path / "results",
            training=TrainSettings(epochs=2, batch_size=8),
            val_fraction=0.25,
            progress=False,
        )
    )
    assert len(result["members"]) == 3 and result["test"]["rows"] == 12
