import numpy as np
import pytest

from extract.store.schema import FeatureKey, FeatureStore, StoreError, chunk_rows_for
from tests.conftest import run_tiny


def test_chunk_rows_divide_the_shard_and_fit_the_budget():
    assert chunk_rows_for(8192, 2048) == 512  # b=24 pool 2 in fp16: 4 MiB chunks
    assert chunk_rows_for(512 * 1024, 2048) == 8  # b=24 full map
    assert chunk_rows_for(10**9, 16) == 1
    assert 2048 % chunk_rows_for(3000, 2048) == 0


def test_feature_key_paths_are_distinct():
    keys = [FeatureKey(t, b, p) for t in (1, 10) for b in (1, 11) for p in (1, 2, None)]
    assert len({k.path for k in keys}) == len(keys)
    assert FeatureKey.from_dict(FeatureKey(5, 24, None).to_dict()) == FeatureKey(5, 24, None)


def test_a_flipped_byte_in_a_chunk_raises_on_read(tmp_path, fmnist_env):
    run_tiny(tmp_path / "s.zarr", ts=(10,), blocks=(7,), pools=(None,))
    store = FeatureStore.open(tmp_path / "s.zarr")
    key = FeatureKey(10, 7, None)
    assert not np.isnan(store.array(key)[:]).any()
    shard_files = sorted(
        p
        for p in (tmp_path / "s.zarr").rglob("*")
        if p.is_file() and "full" in p.parts and p.name != "zarr.json"
    )
    target = shard_files[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        FeatureStore.open(tmp_path / "s.zarr").array(key)[:]


def test_missing_key_lists_what_the_store_holds(tmp_path, fmnist_env):
    run_tiny(tmp_path / "s.zarr", ts=(10,), blocks=(7,), pools=(2,))
    with pytest.raises(StoreError, match=r"no features for t10/b7/p4; it holds: t10/b7/p2"):
        FeatureStore.open(tmp_path / "s.zarr").array(FeatureKey(10, 7, 4))


def test_opening_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        FeatureStore.open(tmp_path / "nothing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError):
        FeatureStore.open(tmp_path / "plain")
