"""The Python API in-process: extract two small stores, probe them, and compare them with CKA."""

from __future__ import annotations

import numpy as np

from diffprobe import api
from extract.store.schema import FeatureStore


def test_extract_probe_and_cka_from_python(tmp_path, fmnist_env):
    common = dict(model="tiny", random_init=True, t=[10], b=[2], pool=[1], progress=False)
    api.extract(tmp_path / "train.zarr", split="train", limit=64, **common)
    api.extract(tmp_path / "test.zarr", split="test", limit=32, **common)
    store = FeatureStore.open(tmp_path / "test.zarr")
    assert store.complete and store.n_rows == 32
    result = api.probe(
        tmp_path / "train.zarr",
        test=tmp_path / "test.zarr",
        heads=["knn"],
        results=tmp_path / "results",
        progress=False,
    )
    assert result["test"]["rows"] == 32 and 0 <= result["test"]["top1"] <= 100
    cka = api.cka(tmp_path / "test.zarr")
    assert cka.n == 32 and np.allclose(np.diag(cka.matrix), 1.0, atol=1e-5)
