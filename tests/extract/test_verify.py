"""verify: a whole store passes; an unwritten shard, a flipped byte, a truncated chunk and NaN rows
are named."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from extract.cli import cli
from extract.store.schema import FeatureKey, FeatureStore
from extract.store.verify import verify_store
from tests.probe.stores import make_store

KEY = FeatureKey(10, 7, 2)


def _store(tmp_path, **kw):
    x = np.random.default_rng(0).normal(size=(48, 4, 2, 2)).astype(np.float16)
    make_store(tmp_path / "s.zarr", {KEY: x}, np.arange(48) % 3, shard_rows=16, **kw)
    return tmp_path / "s.zarr"


def test_a_whole_store_verifies_and_the_cli_exits_0(tmp_path):
    path = _store(tmp_path)
    assert verify_store(path) == []
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0 and result.output.strip().endswith(": ok")


def test_an_unwritten_shard_and_a_missing_completion_flag_are_reported(tmp_path):
    path = _store(tmp_path)
    store = FeatureStore.open(path, mode="r+")
    store.group["progress/done"][1] = 0
    store.mark_incomplete()
    problems = verify_store(path)
    assert "1 of 3 shards not written: [1]" in problems and "not marked complete" in problems


def test_a_flipped_byte_and_a_truncated_chunk_are_named_by_shard(tmp_path):
    path = _store(tmp_path)
    chunks = sorted(p for p in (path / KEY.path / "c").rglob("*") if p.is_file())
    assert len(chunks) == 3
    data = bytearray(chunks[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunks[1].write_bytes(bytes(data))
    chunks[2].write_bytes(chunks[2].read_bytes()[:10])
    problems = verify_store(path)
    assert any("shard 1 (rows 16-31) unreadable" in p for p in problems), problems
    assert any("shard 2 (rows 32-47) unreadable" in p for p in problems), problems
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 1 and "problem(s)" in result.output and "Traceback" not in result.output


def test_nan_in_valid_rows_is_reported_but_not_in_skipped_rows(tmp_path):
    x = np.zeros((32, 4, 2, 2), np.float16)
    x[3] = np.nan
    x[20] = np.inf
    valid = np.ones(32, bool)
    valid[3] = False  # a skipped image: NaN by design
    make_store(tmp_path / "s.zarr", {KEY: x}, np.arange(32) % 2, shard_rows=16, valid=valid)
    assert verify_store(tmp_path / "s.zarr") == [f"{KEY}: NaN or inf in 1 valid rows, first [20]"]


def test_not_a_store(tmp_path):
    (tmp_path / "x").mkdir()
    assert (
        "not a diffprobe" in verify_store(tmp_path / "x")[0]
        or "not a readable" in verify_store(tmp_path / "x")[0]
    )
    assert verify_store(tmp_path / "nope") == [f"{tmp_path / 'nope'}: does not exist"]


@pytest.mark.slow
def test_repair_re_extracts_only_the_bad_shards_to_the_same_bytes(tmp_path, fmnist_env):
    from tests.conftest import run_tiny

    run_tiny(tmp_path / "ref.zarr")
    run_tiny(tmp_path / "s.zarr")
    key = FeatureKey(10, 7, 2)
    chunks = sorted(p for p in (tmp_path / "s.zarr" / key.path / "c").rglob("*") if p.is_file())
    data = bytearray(chunks[2].read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunks[2].write_bytes(bytes(data))
    assert any("shard 2" in p for p in verify_store(tmp_path / "s.zarr"))
    result = CliRunner().invoke(cli, ["verify", "--repair", str(tmp_path / "s.zarr")])
    assert result.exit_code == 0, result.output
    ref, fixed = FeatureStore.open(tmp_path / "ref.zarr"), FeatureStore.open(tmp_path / "s.zarr")
    for k in ref.keys():
        assert np.array_equal(ref.array(k)[:], fixed.array(k)[:], equal_nan=True), k
    assert fixed.attrs["last_run"]["images"] == 16  # one shard of 16 rows was recomputed


def _flip_a_byte(chunk):
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_repair_of_a_corrupted_partial_last_shard(tmp_path, fmnist_env):
    """12 images in shards of 8: the last shard holds 4 rows and ends past the array's end, so
    writing its rows is not a whole-shard write; the corrupted old shard must not be read back."""
    from tests.conftest import run_tiny

    run_tiny(tmp_path / "ref.zarr", limit=12, shard_rows=8)
    run_tiny(tmp_path / "s.zarr", limit=12, shard_rows=8)
    for k in FeatureStore.open(tmp_path / "s.zarr").keys():  # every array's last shard
        chunks = sorted(p for p in (tmp_path / "s.zarr" / k.path / "c").rglob("*") if p.is_file())
        assert len(chunks) == 2
        _flip_a_byte(chunks[1])
    assert any("shard 1 (rows 8-11) unreadable" in p for p in verify_store(tmp_path / "s.zarr"))
    result = CliRunner().invoke(cli, ["verify", "--repair", str(tmp_path / "s.zarr")])
    assert result.exit_code == 0, result.output
    assert verify_store(tmp_path / "s.zarr") == []
    ref, fixed = FeatureStore.open(tmp_path / "ref.zarr"), FeatureStore.open(tmp_path / "s.zarr")
    for k in ref.keys():
        assert np.array_equal(ref.array(k)[:], fixed.array(k)[:], equal_nan=True), k
    assert fixed.attrs["last_run"]["images"] == 4  # only the last shard was recomputed
