import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.checks import resolve_blocks
from extract.data.sources import preprocess
from extract.models.adm import random_unet
from extract.models.adm_blocks import capture
from extract.models.adm_presets import PRESETS
from extract.models.noise import draw_noise, q_sample
from extract.run import extract
from extract.store.config import ExtractConfig, from_flat
from extract.store.schema import FeatureKey, FeatureStore, StoreError, is_store
from tests.conftest import run_tiny, tiny_config


def store_bytes(path) -> dict:
    """Every array of a store as bytes, for bit-identity checks."""
    store = FeatureStore.open(path)
    out = {str(k): store.array(k)[:].tobytes() for k in store.keys()}
    out.update(labels=store.labels().tobytes(), ids="|".join(store.ids()), valid=store.valid().tobytes())
    return out


def test_store_holds_what_was_asked(tmp_path, fmnist_env):
    summary = run_tiny(tmp_path / "s.zarr", views=2)
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert store.complete and summary.images == 96 and summary.shards_total == 6
    assert sorted(store.keys(), key=FeatureKey.sort_key) == sorted(
        (FeatureKey(t, b, p) for t in (10, 300) for b in (3, 7) for p in (1, 2, None)),
        key=FeatureKey.sort_key,
    )
    assert store.array(FeatureKey(10, 3, None)).shape == (96, 2, 32, 16, 16)
    assert store.array(FeatureKey(300, 7, 2)).shape == (96, 2, 64, 2, 2)
    assert store.array(FeatureKey(300, 7, 2)).dtype == np.float16
    assert list(store.labels()) == [i % 10 for i in range(96)]
    attrs = store.attrs
    assert attrs["provenance"]["weights"] == {"random_init": True, "init_seed": 0}
    assert attrs["key"]["dataset"]["name"] == "fashion-mnist" and attrs["key"]["views"] == 2
    a = store.array(FeatureKey(10, 7, 1))[:]
    assert not np.isnan(a).any() and not np.array_equal(a[:, 0], a[:, 1])  # views differ


def test_cached_row_equals_a_direct_computation(tmp_path, fmnist_env):
    """A row of the store is the pooled activation of q_sample(x0, t, eps(seed, index, t))."""
    from extract.data.sources import fashion_mnist

    run_tiny(tmp_path / "s.zarr", store_dtype="float32", seed=5)
    store = FeatureStore.open(tmp_path / "s.zarr")
    preset = PRESETS["tiny"]
    model = random_unet(preset, seed=5)
    group = [16, 17, 18, 19]  # the micro-batch (of 4) that row 17 is computed in
    source = fashion_mnist(None, "train")
    x0 = torch.stack([preprocess(source.load(i), 32, 3) for i in group])
    x_t = q_sample(preset, x0, 300, draw_noise((3, 32, 32), 5, group, 300, 0))
    with torch.no_grad():
        h = capture(model, x_t, torch.full((4,), 300), [7])[7]
    expected = torch.nn.functional.adaptive_avg_pool2d(h, 2)[1].numpy()
    np.testing.assert_array_equal(store.array(FeatureKey(300, 7, 2))[17], expected)


@pytest.mark.slow
def test_bit_identical_across_batch_sizes_and_workers(tmp_path, fmnist_env):
    run_tiny(tmp_path / "a.zarr", batch_size=16, workers=0)
    run_tiny(tmp_path / "b.zarr", batch_size=4, workers=2)
    run_tiny(tmp_path / "c.zarr", batch_size=5, workers=1)  # 5 rounds up to 8
    assert store_bytes(tmp_path / "a.zarr") == store_bytes(tmp_path / "c.zarr")
    assert store_bytes(tmp_path / "a.zarr") == store_bytes(tmp_path / "b.zarr")


@pytest.mark.slow  # an end-to-end extraction (several runs)
def test_subset_rows_equal_the_full_run(tmp_path, fmnist_env):
    """Noise is keyed by dataset index, so a --limit subset holds the same rows as the full run."""
    run_tiny(tmp_path / "full.zarr")
    run_tiny(tmp_path / "sub.zarr", limit=20)
    full, sub = FeatureStore.open(tmp_path / "full.zarr"), FeatureStore.open(tmp_path / "sub.zarr")
    rows = sub.index()
    assert len(rows) == 20
    key = FeatureKey(10, 7, 2)
    np.testing.assert_array_equal(sub.array(key)[:], full.array(key)[:][rows])


@pytest.mark.slow  # an end-to-end extraction (several runs)
def test_resume_after_a_failure_equals_an_uninterrupted_run(tmp_path, fmnist_env, monkeypatch):
    run_tiny(tmp_path / "ref.zarr")
    real_write = FeatureStore.write_shard
    written = []

    def failing_write(self, s, *args):
        if len(written) == 2:
            raise OSError("disk went away")
        written.append(s)
        real_write(self, s, *args)

    monkeypatch.setattr(FeatureStore, "write_shard", failing_write)
    with pytest.raises(OSError):
        run_tiny(tmp_path / "cut.zarr")
    cut = FeatureStore.open(tmp_path / "cut.zarr")
    assert not cut.complete and cut.done_shards().sum() == 2
    monkeypatch.setattr(FeatureStore, "write_shard", real_write)
    summary = run_tiny(tmp_path / "cut.zarr")
    assert summary.images == 96 - 2 * 16  # only the missing shards were computed
    assert store_bytes(tmp_path / "cut.zarr") == store_bytes(tmp_path / "ref.zarr")


def test_a_creation_killed_before_its_metadata_landed_is_started_afresh(tmp_path, fmnist_env):
    """A kill right after the folder appears leaves it empty or holding only zarr's temporary
    `*.partial` files: the same command starts the store afresh; any other folder is refused."""
    run_tiny(tmp_path / "ref.zarr", limit=20)
    torn = tmp_path / "torn.zarr"
    torn.mkdir()
    (torn / "zarr.4b075df9d36349f2a3766343997ec7ad.partial").write_bytes(b'{"zarr_format"')
    run_tiny(torn, limit=20)
    assert store_bytes(torn) == store_bytes(tmp_path / "ref.zarr")
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="exists and is not a diffprobe store"):
        run_tiny(other, limit=20)
    assert (other / "notes.txt").read_text() == "mine"


def _cli(out, *extra):
    return [
        sys.executable,
        "-m",
        "extract",
        "run",
        "--model",
        "tiny",
        "--random-init",
        "--out",
        str(out),
        "-t",
        "10",
        "-b",
        "7",
        "--pool",
        "2",
        "--shard-rows",
        "8",
        "--micro-batch",
        "4",
        "--batch-size",
        "4",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def one_process_store(tmp_path_factory, fmnist_dir) -> Path:
    """What `_cli` writes in one uninterrupted process: the reference of the kill and torchrun tests."""
    out = tmp_path_factory.mktemp("one") / "one.zarr"
    env = {**os.environ, "FASHION_MNIST_DIR": str(fmnist_dir), "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(out), check=True, env=env, capture_output=True)
    return out


KILL_POINTS = {
    "while the store is created": lambda done, exists: exists,
    "after 2 shards": lambda done, exists: 2 <= done.sum() < len(done),
    "before the last shard": lambda done, exists: len(done) > 1 and done.sum() == len(done) - 1,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_is_bit_identical(tmp_path, fmnist_env, point, one_process_store):
    env = {**os.environ, "FASHION_MNIST_DIR": str(fmnist_env), "OMP_NUM_THREADS": "1"}
    killed = False
    for _ in range(5):  # a fast machine can finish a run between two polls: try again on a fresh store
        shutil.rmtree(tmp_path / "cut.zarr", ignore_errors=True)
        (tmp_path / "cut.zarr.lock").unlink(missing_ok=True)
        proc = subprocess.Popen(
            _cli(tmp_path / "cut.zarr"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            exists = (tmp_path / "cut.zarr").exists()
            try:
                done = FeatureStore.open(tmp_path / "cut.zarr").done_shards()
            # a store caught mid-write reads as "not there yet", whatever zarr raises
            except Exception:  # noqa: BLE001
                done = np.zeros(1, dtype=bool)
            if KILL_POINTS[point](done, exists):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        proc.wait()
        if killed:
            break
    assert killed, "the run finished before it could be killed, five times"
    cut = tmp_path / "cut.zarr"
    if point == "while the store is created":
        # killed at any moment of creation: its metadata may not have landed yet, and no run finished
        assert cut.exists() and not (is_store(cut) and FeatureStore.open(cut).complete)
    else:  # killed between shards: a store with shards done, its run unfinished
        assert is_store(cut) and FeatureStore.open(cut).done_shards().any()
        assert not FeatureStore.open(cut).complete
    assert (tmp_path / "cut.zarr.lock").exists()  # left by the killed run; the resume takes it over
    subprocess.run(_cli(tmp_path / "cut.zarr"), check=True, env=env, capture_output=True)
    assert FeatureStore.open(tmp_path / "cut.zarr").complete
    assert store_bytes(tmp_path / "cut.zarr") == store_bytes(one_process_store)


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tmp_path, fmnist_env, one_process_store):
    env = {**os.environ, "FASHION_MNIST_DIR": str(fmnist_env), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    done = subprocess.run(torchrun + _cli(tmp_path / "two.zarr")[2:], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    two = FeatureStore.open(tmp_path / "two.zarr")
    assert two.complete and two.attrs["last_run"]["world_size"] == 2
    assert store_bytes(one_process_store) == store_bytes(tmp_path / "two.zarr")


@pytest.mark.slow  # an end-to-end extraction (several runs)
def test_other_arguments_into_an_existing_store_are_refused_then_overwritten(tmp_path, fmnist_env):
    run_tiny(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match=r"ts: store has \[10, 300\], asked \[10\]"):
        run_tiny(tmp_path / "s.zarr", ts=(10,))
    run_tiny(tmp_path / "s.zarr", ts=(10,), overwrite=True)
    assert [k.t for k in FeatureStore.open(tmp_path / "s.zarr").keys()] == [10] * 6


def test_a_folder_that_is_not_a_store_is_never_replaced(tmp_path, fmnist_env):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a diffprobe store"):
        run_tiny(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def _bad_image_bytes(kind: str, folder: Path) -> bytes:
    good = (folder / "train" / "dog" / "0.png").read_bytes()
    return {
        "text": b"not a png at all",
        "zero-byte": b"",
        "truncated": good[: len(good) // 2],
        "corrupt": good[:40] + bytes(b ^ 0xFF for b in good[40:80]) + good[80:],
    }[kind]


@pytest.mark.parametrize("kind", ["text", "zero-byte", "truncated", "corrupt"])
def test_unreadable_image_stops_the_run_naming_it(tmp_path, image_folder, kind):
    (image_folder / "train" / "dog" / "broken.jpg").write_bytes(_bad_image_bytes(kind, image_folder))
    cfg = dict(data="imagefolder", data_root=image_folder, shard_rows=4, ts=(10,), blocks=(7,), pools=(1,))
    with pytest.raises(ValueError, match=r"cannot read image 'dog/broken.jpg'"):
        run_tiny(tmp_path / "s.zarr", **cfg)
    assert not FeatureStore.open(tmp_path / "s.zarr").complete


def test_a_one_pixel_image_is_upscaled_not_refused(tmp_path, image_folder):
    from PIL import Image

    Image.new("RGB", (1, 1), (200, 10, 10)).save(image_folder / "train" / "cat" / "dot.png")
    cfg = dict(data="imagefolder", data_root=image_folder, shard_rows=4, ts=(10,), blocks=(7,), pools=(1,))
    summary = run_tiny(tmp_path / "s.zarr", **cfg)
    assert summary.images == 7 and FeatureStore.open(tmp_path / "s.zarr").valid().all()


def test_skip_bad_marks_the_row_and_lists_it(tmp_path, image_folder):
    (image_folder / "train" / "dog" / "broken.png").write_bytes(b"")
    cfg = dict(data="imagefolder", data_root=image_folder, shard_rows=4, ts=(10,), blocks=(7,), pools=(1,))
    summary = run_tiny(tmp_path / "s.zarr", skip_bad=True, **cfg)
    store = FeatureStore.open(tmp_path / "s.zarr")
    ids = list(store.ids())
    bad = ids.index("dog/broken.png")
    assert summary.skipped == ["dog/broken.png"] and store.attrs["skipped"] == ["dog/broken.png"]
    assert not store.valid()[bad] and store.valid().sum() == len(ids) - 1
    feats = store.array(FeatureKey(10, 7, 1))[:]
    assert np.isnan(feats[bad]).all() and not np.isnan(np.delete(feats, bad, axis=0)).any()


def test_hdf5_run(tmp_path):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.random.default_rng(0).integers(0, 255, (10, 20, 20), dtype=np.uint8)
        f["labels"] = np.arange(10) % 3
    run_tiny(tmp_path / "s.zarr", data="hdf5", data_root=path, ts=(5,), blocks=(2,), pools=(4,))
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert list(store.labels()) == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert store.array(FeatureKey(5, 2, 4)).shape == (10, 32, 4, 4)


def test_validation_errors_come_before_any_work(tmp_path):
    cases = [
        (dict(ts=(1000,)), r"timestep 1000 is outside \[0, 1000\)"),
        (dict(blocks=(14,)), r"block 14 is outside 1..13"),
        (dict(pools=(9,)), r"block 7: pool 9 is larger than the block's 8x8 map"),
        (dict(random_init=False), r"no --ckpt given"),
        (dict(random_init=False, ckpt=tmp_path / "x.pt"), r"checkpoint not found"),
        (dict(model="adm9"), r"unknown model preset 'adm9'"),
    ]
    for overrides, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            extract(tiny_config(tmp_path / "s.zarr", **{"blocks": (7,), **overrides}))
        assert not (tmp_path / "s.zarr").exists()


def test_bf16_autocast_is_close_to_fp32_and_keyed_apart(tmp_path, fmnist_env):
    cfg = dict(ts=(10,), blocks=(7,), pools=(2,), store_dtype="float32")
    run_tiny(tmp_path / "fp32.zarr", **cfg)
    run_tiny(tmp_path / "bf16.zarr", dtype="bf16", **cfg)
    key = FeatureKey(10, 7, 2)
    a = FeatureStore.open(tmp_path / "fp32.zarr").array(key)[:].reshape(96, -1)
    b = FeatureStore.open(tmp_path / "bf16.zarr").array(key)[:].reshape(96, -1)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(a, b)
    assert FeatureStore.open(tmp_path / "bf16.zarr").attrs["key"]["dtype"] == "bf16"


@pytest.mark.slow
def test_a_second_writer_on_a_store_is_refused_while_the_first_holds_it(tmp_path, fmnist_env):
    import json
    import socket

    from extract.store.schema import StoreLock

    out = tmp_path / "s.zarr"
    first = StoreLock(out).acquire()
    try:
        with pytest.raises(
            StoreError, match=rf"is being written by another extraction \(pid {os.getpid()} on "
        ):
            run_tiny(out)
        assert not out.exists()
    finally:
        first.release()
    # a lock left by a killed run (its pid gone) is taken over; a finished run leaves none
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    Path(str(out) + ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(done.stdout)}))
    summary = run_tiny(out)
    assert summary.shards_done == summary.shards_total and not Path(str(out) + ".lock").exists()


def test_a_full_disk_mid_shard_fails_clearly_and_verify_reports_the_store_incomplete(
    tmp_path, fmnist_env, monkeypatch
):
    import errno

    import zarr.storage
    from click.testing import CliRunner

    from extract.cli import cli
    from extract.store.verify import verify_store

    real_set = zarr.storage.LocalStore.set
    calls = {"n": 0}

    async def fills_up(self, key, value):
        if "features/" in key and "/c/" in key:  # chunk data of a feature array: the disk fills on the 3rd
            calls["n"] += 1
            if calls["n"] >= 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return await real_set(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", fills_up)
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            "tiny",
            "--random-init",
            "--out",
            str(out),
            "-t",
            "10",
            "-b",
            "7",
            "--pool",
            "2",
            "--shard-rows",
            "16",
            "--micro-batch",
            "4",
            "--no-progress",
        ],
    )
    assert (
        result.exit_code == 2
        and "No space left on device" in result.output
        and "Traceback" not in result.output
    )
    monkeypatch.setattr(zarr.storage.LocalStore, "set", real_set)
    problems = verify_store(out)
    assert "not marked complete" in problems and any("shards not written" in p for p in problems), problems
    assert not Path(str(out) + ".lock").exists()  # the writer lock is released on failure


def test_the_default_block_is_output_blocks_4_the_papers_b24():
    from extract.models.adm_presets import PRESETS

    assert PRESETS["adm256-uncond"].default_block == 24 and PRESETS["demo-fmnist"].default_block == 24
    assert PRESETS["adm256-uncond"].middle_block == 19 and PRESETS["demo-fmnist"].middle_block == 19
    assert resolve_blocks(from_flat(ExtractConfig, out=Path("x")), PRESETS["adm256-uncond"]) == (24,)
    every = from_flat(ExtractConfig, out=Path("x"), blocks=("all",))
    assert resolve_blocks(every, PRESETS["tiny"]) == tuple(range(1, 14))


def test_all_blocks_with_skip_small_maps_leaves_out_only_pools_larger_than_a_map(tmp_path, fmnist_env):
    """tiny's maps are 32, 16 and 8 wide: pool 16 fits blocks 1-4 and 9-13 only."""
    with pytest.raises(ValueError, match="--skip-small-maps"):
        run_tiny(tmp_path / "refused.zarr", ts=(10,), blocks=("all",), pools=(1, 16), limit=4)
    run_tiny(tmp_path / "s.zarr", ts=(10,), blocks=("all",), pools=(1, 16), skip_small_maps=True, limit=4)
    store = FeatureStore.open(tmp_path / "s.zarr")
    keys = set(store.keys())
    assert keys == {FeatureKey(10, b, 1) for b in range(1, 14)} | {
        FeatureKey(10, b, 16) for b in (1, 2, 3, 4, 9, 10, 11, 12, 13)
    }
    # the arrays written equal a run asking for those pairs alone
    run_tiny(tmp_path / "one.zarr", ts=(10,), blocks=(9,), pools=(16,), limit=4)
    alone = FeatureStore.open(tmp_path / "one.zarr").array(FeatureKey(10, 9, 16))[:]
    np.testing.assert_array_equal(store.array(FeatureKey(10, 9, 16))[:], alone)
    assert (
        store.attrs["key"]["skip_small_maps"] is True
        and "skip_small_maps" not in FeatureStore.open(tmp_path / "one.zarr").attrs["key"]
    )


def test_a_blocks_own_pool_equals_pooling_its_full_map(tmp_path, fmnist_env):
    """--block-pool gives one block its own pools in the same forward: the pooled rows equal the
    full map of the same run pooled afterwards (store rounding aside)."""
    import torch

    from extract.models.pooling import pool
    from extract.store.schema import FeatureKey, FeatureStore
    from tests.conftest import run_tiny

    run_tiny(
        tmp_path / "own.zarr",
        ts=(10,),
        blocks=(3, 7),
        pools=(None,),
        block_pools=("3:4,full",),
        limit=8,
        store_dtype="float32",
    )
    store = FeatureStore.open(tmp_path / "own.zarr")
    assert sorted(k.label for k in store.keys()) == ["t10/b3/full", "t10/b3/p4", "t10/b7/full"]
    full, own = (np.asarray(store.array(FeatureKey(10, 3, p))[:]) for p in (None, 4))
    np.testing.assert_allclose(own, pool(torch.from_numpy(full), 4).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # an end-to-end extraction (several runs)
def test_a_data_seed_keeps_the_images_while_the_seed_changes_the_noise(tmp_path, fmnist_env):
    """--data-seed draws the subset alone: seeds 0 and 1 (noise, and here the random weights) read
    the same images; seed 0 with --data-seed 0 is the plain seed-0 store (same key, nothing recomputed)."""
    run_tiny(tmp_path / "s0.zarr", limit=12)
    run_tiny(tmp_path / "s1.zarr", limit=12, seed=1, data_seed=0)
    run_tiny(tmp_path / "s1-own.zarr", limit=12, seed=1)
    s0, s1, own = (FeatureStore.open(tmp_path / n) for n in ("s0.zarr", "s1.zarr", "s1-own.zarr"))
    assert np.array_equal(s0.index(), s1.index()) and not np.array_equal(s0.index(), own.index())
    key = FeatureKey(10, 7, None)
    assert not np.array_equal(s0.array(key)[:], s1.array(key)[:])
    assert s1.attrs["key"]["seed"] == 1 and "data_seed" not in s1.attrs["key"]
    before = store_bytes(tmp_path / "s0.zarr")
    assert run_tiny(tmp_path / "s0.zarr", limit=12, data_seed=0).images == 0
    assert store_bytes(tmp_path / "s0.zarr") == before
