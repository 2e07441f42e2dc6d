"""Rows read straight from the shard files equal zarr's reading of the same array, for every
kind of slice; corrupt bytes are refused; stores written with zstd still read (through zarr)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from extract.store.schema import FeatureKey, FeatureStore
from extract.store.shard_read import ChecksumError
from tests.probe.stores import make_store

KEY = FeatureKey(10, 7, 2)
OLD = Path(__file__).resolve().parents[1] / "fixtures" / "stores" / "tiny-random_fashion-mnist_train_v1.zarr"


def _store(tmp_path, n=50, views=1, dtype="float16"):
    rng = np.random.default_rng(0)
    shape = (n, views, 6, 4, 4) if views > 1 else (n, 6, 4, 4)
    x = rng.normal(size=shape).astype(dtype)
    # 16-row shards; 6*4*4*2 = 192 bytes a row, so one 4 MiB chunk would hold a whole shard:
    # shrink the chunk budget so a shard holds several chunks
    import extract.store.schema as schema

    old, schema.CHUNK_BYTES = (
        schema.CHUNK_BYTES,
        192 * 4 * (2 if dtype == "float32" else 1) * (views if views > 1 else 1),
    )
    try:
        store = make_store(
            tmp_path / "s.zarr", {KEY: x}, np.arange(n) % 3, shard_rows=16, views=views, dtype=dtype
        )
    finally:
        schema.CHUNK_BYTES = old
    return store, x


@pytest.mark.parametrize("views,dtype", [(1, "float16"), (3, "float16"), (1, "float32")])
def test_every_slice_equals_zarrs_read(tmp_path, views, dtype):
    store, x = _store(tmp_path, views=views, dtype=dtype)
    array = store.array(KEY)
    assert array.fast and array.shape == x.shape and array.dtype == np.dtype(dtype)
    reference = zarr.open_array(str(tmp_path / "s.zarr" / KEY.path), mode="r")
    for lo, hi in [(0, 50), (0, 16), (3, 5), (4, 8), (15, 17), (10, 45), (48, 50), (49, 50), (7, 7), (0, 1)]:
        got = array[lo:hi]
        assert got.shape == (hi - lo, *x.shape[1:]) and got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, reference[lo:hi])
        np.testing.assert_array_equal(got, x[lo:hi])
    np.testing.assert_array_equal(array[:], x)
    np.testing.assert_array_equal(array[-5:], x[-5:])
    np.testing.assert_array_equal(array[0:50:2], x[0:50:2])  # a stepped slice goes through zarr


def test_unwritten_shards_and_chunks_read_as_nan_like_zarr(tmp_path):
    store, x = _store(tmp_path)
    array = store.array(KEY)
    reference = zarr.open_array(str(tmp_path / "s.zarr" / KEY.path), mode="r+")
    reference[16:20] = np.nan  # an all-NaN chunk is not written: the index marks it empty
    shard_file = next((tmp_path / "s.zarr" / KEY.path / "c" / "2").rglob("*"))
    while shard_file.is_dir():
        shard_file = next(shard_file.iterdir())
    shard_file.unlink()  # a shard that was never written
    got = store.array(KEY)[:]
    np.testing.assert_array_equal(got, reference[:])
    assert np.isnan(got[16:20]).all() and np.isnan(got[32:48]).all()
    np.testing.assert_array_equal(got[20:32], x[20:32])
    assert array.fast


def _shard_file(root: Path, s: int) -> Path:
    return next(p for p in (root / KEY.path / "c" / str(s)).rglob("*") if p.is_file())


def test_a_flipped_byte_in_a_chunk_or_in_the_index_is_refused(tmp_path):
    store, x = _store(tmp_path)
    path = _shard_file(tmp_path / "s.zarr", 1)
    good = path.read_bytes()
    data = bytearray(good)
    data[100] ^= 0xFF  # inside the first chunk of shard 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="does not match its CRC32C"):
        store.array(KEY)[16:18]
    np.testing.assert_array_equal(store.array(KEY)[0:16], x[0:16])  # other shards still read
    data = bytearray(good)
    data[-10] ^= 0xFF  # inside the index
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="shard index"):
        store.array(KEY)[16:18]
    path.write_bytes(good[:20])
    with pytest.raises(ChecksumError, match="truncated"):
        store.array(KEY)[16:18]


def test_a_store_written_with_zstd_reads_through_zarr_with_the_same_values():
    store = FeatureStore.open(OLD)
    for key in store.keys():
        array = store.array(key)
        assert not array.fast
        reference = zarr.open_array(str(OLD / key.path), mode="r")
        np.testing.assert_array_equal(array[3:21], reference[3:21])


def test_new_stores_are_written_without_compression_and_with_a_crc_per_chunk(tmp_path):
    _store(tmp_path)
    codecs = zarr.open_array(str(tmp_path / "s.zarr" / KEY.path), mode="r").metadata.codecs[0].codecs
    assert [type(c).__name__ for c in codecs] == ["BytesCodec", "Crc32cCodec"]


def test_the_fast_checksum_equals_zarrs_own_crc32c():
    from google_crc32c import value

    from extract.store import shard_read

    data = np.random.default_rng(3).integers(0, 256, 1 << 20, dtype=np.uint8)
    assert shard_read._crc32c(data) == value(data) and shard_read._crc32c(data[:-1]) == value(data[:-1])
