"""Fixtures shared by the probe tests."""

from __future__ import annotations

import pytest

from extract.store.schema import FeatureKey
from tests.probe.stores import blobs, make_store

KEY = FeatureKey(10, 7, 2)


@pytest.fixture
def stores(tmp_path):
    """train.zarr and test.zarr in tmp_path: 4 Gaussian classes at key t10/b7/p2."""
    x, y, c = blobs(320, 4, 16, seed=0, spread=1.5, shape=(4, 2, 2))
    xt, yt, _ = blobs(80, 4, 16, seed=1, spread=1.5, shape=(4, 2, 2), centres=c)
    make_store(tmp_path / "train.zarr", {KEY: x}, y, shard_rows=32)
    make_store(tmp_path / "test.zarr", {KEY: xt}, yt, split="test", shard_rows=32)
    return tmp_path
