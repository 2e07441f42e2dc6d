"""Every store kind goes through the one writer and so gets its guarantees: the lock, resume
after a run dies mid-way (a stale lock and half the shards left behind), `verify --repair`,
and refusal of other arguments. Checked for U-Net, pixel, backbone and feature-network stores alike."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from extract.repair import repair_store
from extract.store.config import from_flat
from extract.store.schema import FeatureKey, FeatureStore, StoreError, StoreLock
from extract.store.verify import verify_store
from extract.store.writer import StorePlan, write_store
from tests.conftest import run_tiny


def unet(out: Path, **kw):
    return run_tiny(out, ts=(10,), blocks=(7,), pools=(2,), limit=12, shard_rows=4, **kw)


def pixels(out: Path, **kw):
    from extract.models.pixels import PixelConfig, extract_pixels

    return extract_pixels(from_flat(PixelConfig, out=out, limit=12, shard_rows=4, progress=False, **kw))


def backbone(out: Path, **kw):
    from extract.models.backbones import BackboneConfig, extract_backbone

    return extract_backbone(
        from_flat(
            BackboneConfig,
            out=out,
            model="torchvision:resnet50",
            random_init=True,
            blocks=(1,),
            pools=(1,),
            limit=6,
            shard_rows=2,
            batch_size=2,
            device="cpu",
            progress=False,
            **kw,
        )
    )


def features(out: Path, **kw):
    from extract.models.feature_store import FeatureStoreConfig, extract_features

    return extract_features(
        from_flat(
            FeatureStoreConfig,
            out=out,
            features="pixels",
            image_size=8,
            limit=12,
            shard_rows=4,
            batch_size=3,
            progress=False,
            **kw,
        )
    )


KINDS = {"unet": unet, "pixels": pixels, "backbone": backbone, "features": features}
# a random-init ResNet-50 costs several seconds a run: its cases go to the slow tier
SLOW_KINDS = {"backbone"}


def kinds(*names: str) -> list:
    return [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_KINDS else k for k in names or KINDS]


def arrays(path: Path) -> dict:
    store = FeatureStore.open(path)
    return {k: store.array(k)[:] for k in store.keys()}


def assert_same(a: Path, b: Path) -> None:
    x, y = arrays(a), arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_writer_is_refused(kind, tmp_path, fmnist_env):
    out = tmp_path / "s.zarr"
    lock = StoreLock(out).acquire()  # held by this (live) process, as by a running extraction
    try:
        with pytest.raises(StoreError, match="is being written by another extraction"):
            KINDS[kind](out)
    finally:
        lock.release()
    assert not out.exists()  # the lock is taken before anything is written: the refused run left nothing


@pytest.mark.parametrize("kind", kinds())
def test_a_run_that_died_mid_way_resumes_to_the_same_bytes(kind, tmp_path, fmnist_env, monkeypatch):
    KINDS[kind](tmp_path / "whole.zarr")
    out = tmp_path / "s.zarr"
    real, calls = FeatureStore.write_shard, []

    def dies_after_one_shard(self, s, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(s)
        return real(self, s, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_shard", dies_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        KINDS[kind](out)
    monkeypatch.setattr(FeatureStore, "write_shard", real)
    # what kill -9 leaves: the lock of a process that no longer exists, one shard done
    Path(str(out) + ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 7}))
    store = FeatureStore.open(out)
    assert not store.complete and store.done_shards().sum() == 1
    KINDS[kind](out)
    assert FeatureStore.open(out).complete and not Path(str(out) + ".lock").exists()
    assert_same(tmp_path / "whole.zarr", out)


@pytest.mark.parametrize("kind", kinds())
def test_verify_repair_restores_a_corrupted_shard(kind, tmp_path, fmnist_env):
    KINDS[kind](tmp_path / "ref.zarr")
    out = tmp_path / "s.zarr"
    KINDS[kind](out)
    key = FeatureStore.open(out).keys()[0]
    chunks = sorted(p for p in (out / key.path / "c").rglob("*") if p.is_file())
    data = bytearray(chunks[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunks[1].write_bytes(bytes(data))
    assert any("shard 1" in p for p in verify_store(out))
    assert repair_store(out) == []
    assert_same(tmp_path / "ref.zarr", out)


@pytest.mark.parametrize("kind", kinds("pixels", "backbone", "features"))
def test_the_same_command_again_resumes_and_other_arguments_are_refused(kind, tmp_path, fmnist_env):
    out = tmp_path / "s.zarr"
    first = KINDS[kind](out)
    assert "(0 computed now)" not in first
    assert "(0 computed now)" in KINDS[kind](out)
    with pytest.raises(StoreError, match="made with other arguments .*seed"):
        KINDS[kind](out, seed=1)
    assert FeatureStore.open(out).attrs["compatible"]  # the kind declared what its features depend on


def test_a_resume_with_another_micro_batch_needs_allow_mismatch_and_is_recorded(tmp_path, fmnist_env):
    out = tmp_path / "s.zarr"
    unet(out)
    whole = FeatureStore.open(out)
    key = whole.keys()[0]
    reference = whole.array(key)[:].astype(np.float32)
    store = FeatureStore.open(out, mode="r+")
    store.group["progress/done"][1] = 0
    store.group["progress/done"][2] = 0
    store.mark_incomplete()
    with pytest.raises(
        StoreError,
        match="another micro-batch or device .*micro_batch: store has 4, asked 2.*--allow-mismatch",
    ):
        unet(out, micro_batch=2)
    summary = unet(out, micro_batch=2, allow_mismatch=True)
    assert summary.images == 8 and summary.shards_done == summary.shards_total == 3
    done = FeatureStore.open(out)
    assert done.complete and done.attrs["key"]["micro_batch"] == 4  # the store keeps its first key
    assert done.attrs["resumed_with"] == [{"micro_batch": 2, "shards": [1, 2]}]
    # rounding, not meaning
    np.testing.assert_allclose(done.array(key)[:].astype(np.float32), reference, rtol=2e-2, atol=2e-3)
    # meaning still refuses, flag or not
    with pytest.raises(StoreError, match="made with other arguments .*seed"):
        unet(out, seed=1, allow_mismatch=True)


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[3] ^= 0xFF  # inside the first inner chunk
    path.write_bytes(bytes(data if how == "flip" else data[:10]))


@pytest.mark.parametrize("rows,how", [(16, "truncate"), (12, "flip"), (12, "truncate")])
def test_a_damaged_shard_file_is_rewritten_whole_or_partial(rows, how, tmp_path):
    """zarr writes into a shard by reading the old file back (its index always, an inner chunk the
    write does not cover whole): a torn file, or a flipped byte in a partial last shard (it ends
    past the array's end, so a write never covers it whole) used to fail on the checksum."""
    from extract.store.schema import FeatureKey

    key = FeatureKey(1, 1, 1)
    store = FeatureStore.create(
        tmp_path / "s.zarr",
        row_shapes={key: (4, 1, 1)},
        ids=[str(i) for i in range(rows)],
        labels=np.zeros(rows),
        index=np.arange(rows),
        shard_rows=8,
        views=1,
        dtype="float16",
        attrs={},
    )

    def write(s, value):
        n = len(store.shard_rows(s))
        store.write_shard(s, {key: np.full((n, 4, 1, 1), value, np.float16)}, np.ones(n, bool))

    write(0, 1)
    write(1, 1)
    _damage(sorted(p for p in (store.path / key.path / "c").rglob("*") if p.is_file())[1], how)
    write(1, 2)
    assert store.array(key)[:][:, 0, 0, 0].tolist() == [1] * 8 + [2] * (rows - 8)


def test_a_torn_partial_last_shard_is_rewritten_on_resume(tmp_path, fmnist_env):
    """A run that died writing its last, partial shard and left its files torn resumes to the same bytes."""
    run_tiny(tmp_path / "whole.zarr", limit=10, shard_rows=4)
    out = tmp_path / "s.zarr"
    run_tiny(out, limit=10, shard_rows=4)
    store = FeatureStore.open(out, mode="r+")
    for key in store.keys():
        last = sorted(p for p in (out / key.path / "c").rglob("*") if p.is_file())
        assert len(last) == store.n_shards == 3
        _damage(last[-1], "truncate")
    store.group["progress/done"][2] = 0
    store.mark_incomplete()
    run_tiny(out, limit=10, shard_rows=4)
    assert FeatureStore.open(out).complete and verify_store(out) == []
    assert_same(tmp_path / "whole.zarr", out)


def test_before_runs_under_the_lock_and_its_error_stops_the_run_with_nothing_left(tmp_path):
    out = tmp_path / "s.zarr"
    plan = StorePlan(
        out=out,
        key={"k": 1},
        compatible=("k",),
        provenance={},
        row_shapes={FeatureKey(0, 0, None): (1, 2, 2)},
        ids=["a", "b"],
        labels=np.zeros(2, np.int64),
        index=np.arange(2),
        shard_rows=2,
    )
    seen = []

    def before():
        seen.append(Path(str(out) + ".lock").exists())
        raise ValueError("the folder beside it is not ours")

    with pytest.raises(StoreError, match="the folder beside it is not ours"):
        write_store(plan, lambda store, shards: 0, before=before)
    assert seen == [True] and not out.exists() and not Path(str(out) + ".lock").exists()

    def fill(store: FeatureStore, shards: list[int]) -> int:
        for s in shards:
            store.write_shard(s, {FeatureKey(0, 0, None): np.zeros((2, 1, 2, 2))}, np.ones(2, bool))
        return 2

    written = write_store(plan, fill, before=lambda: seen.append("again"))
    assert seen[-1] == "again" and written.images == 2 and FeatureStore.open(out).complete
