"""Sampling: guided-diffusion's update rules, images seeded one by one, shards that resume,
the torchrun split, the sample file's format and the command line's errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import extract.generate.sample_folder as sample_folder
import extract.generate.sampling as sampling
from extract.cli import main
from extract.generate.sample_folder import sample
from extract.generate.sampling import SampleConfig, draw, respaced_diffusion
from extract.models.adm import random_unet
from extract.models.adm_presets import PRESETS
from extract.store.schema import FeatureStore

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_model():
    return random_unet(TINY, 0)


def config(out, **kw) -> SampleConfig:
    base = dict(
        out=out, model="tiny", random_init=True, n=5, steps=3, shard_size=2, batch_size=2, progress=False
    )
    return SampleConfig(**{**base, **kw})


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7)])
def test_each_step_equals_guided_diffusions_own_update_given_the_same_noise(
    tiny_model, monkeypatch, sampler, eta
):
    diffusion = respaced_diffusion(TINY, 10, sampler)
    g = torch.Generator().manual_seed(1)
    x, noise = torch.randn(3, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    t = torch.tensor([7, 7, 7])
    ours = sampling.SAMPLERS[sampler](diffusion, tiny_model, x, t, noise, eta, True, {})
    monkeypatch.setattr(torch, "randn_like", lambda like: noise)  # guided-diffusion draws its noise this way
    with torch.no_grad():
        if sampler == "ddpm":
            theirs = diffusion.p_sample(tiny_model, x, t)["sample"]
        else:
            theirs = diffusion.ddim_sample(tiny_model, x, t, eta=eta)["sample"]
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, x)


def test_an_image_does_not_depend_on_its_batch(tiny_model):
    """Image i's noise is a function of (seed, i) alone; on this CPU the pixels came out
    identical for batch sizes 1, 2 and 5 (measured); the test allows one grey level of
    kernel rounding and checks that almost every pixel is identical."""
    whole = draw(TINY, tiny_model, [0, 1, 2, 3, 4], None, steps=4, seed=3)
    pairs = np.concatenate(
        [draw(TINY, tiny_model, [a, b], None, steps=4, seed=3) for a, b in ((0, 1), (2, 3))]
        + [draw(TINY, tiny_model, [4], None, steps=4, seed=3)]
    )
    alone = draw(TINY, tiny_model, [3], None, steps=4, seed=3)
    assert whole.dtype == np.uint8 and whole.shape == (5, 32, 32, 3)
    for other in (pairs, np.concatenate([whole[:3], alone, whole[4:]])):
        diff = np.abs(whole.astype(int) - other.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999
    assert not np.array_equal(whole[0], whole[1])  # different images get different noise
    # and different seeds differ
    assert not np.array_equal(whole, draw(TINY, tiny_model, [0, 1, 2, 3, 4], None, steps=4, seed=4))


def test_a_run_writes_pngs_the_sample_file_and_provenance(tmp_path):
    line = sample(config(tmp_path / "s"))
    npz = tmp_path / "s" / "samples_5x32x32x3.npz"
    assert str(npz) in line
    arr = np.load(npz)
    assert arr.files == ["arr_0"] and arr["arr_0"].dtype == np.uint8 and arr["arr_0"].shape == (5, 32, 32, 3)
    for i in range(5):
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "s" / "png" / f"{i:06d}.png")), arr["arr_0"][i]
        )
    meta = json.loads((tmp_path / "s" / "samples.json").read_text())
    prov = meta["provenance"]
    assert meta["complete"] and prov["model"] == "tiny" and prov["weights"] == "random-init"
    assert (prov["steps"], prov["sampler"], prov["eta"], prov["seed"], prov["n"]) == (
        3,
        "ddpm",
        0.0,
        0,
        5,
    ) and prov["version"]


def test_a_killed_run_resumes_to_the_same_images_whatever_the_batch_size(tmp_path, monkeypatch):
    sample(config(tmp_path / "whole"))
    real = sample_folder.save_pngs
    calls = {"n": 0}

    def dies_on_the_second_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sample_folder, "save_pngs", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        sample(config(tmp_path / "broken"))
    monkeypatch.setattr(sample_folder, "save_pngs", real)
    store = FeatureStore.open(tmp_path / "broken" / sample_folder.STORE_NAME)
    assert store.done_shards().tolist() == [True, False, False] and not store.complete
    # not a finished sample set: the samples dataset refuses it
    assert not (tmp_path / "broken" / "samples.json").exists()
    assert not (tmp_path / "broken" / "images.zarr.lock").exists()  # the writer let go of its lock
    line = sample(config(tmp_path / "broken", batch_size=3))
    assert "3 drawn now" in line  # shards 1 and 2 only
    a, b = (np.load(tmp_path / d / "samples_5x32x32x3.npz")["arr_0"] for d in ("whole", "broken"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert "0 drawn now" in sample(config(tmp_path / "broken"))  # finished: nothing to draw


def test_other_arguments_into_an_existing_run_are_refused(tmp_path):
    sample(config(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"made with other arguments \(seed, weights\)"):
        sample(config(tmp_path / "s", seed=1))
    assert "5 images (5 drawn now" in sample(config(tmp_path / "s", seed=1, overwrite=True))
    # the batch size is not part of the key
    assert "5 images (0 drawn now" in sample(config(tmp_path / "s", seed=1, batch_size=4))


def test_torchrun_ranks_split_the_shards_and_give_the_single_run_result(tmp_path):
    """Rank 0 and rank 1 of two run in turn: rank 1's work happens inside rank 0's all_sum,
    where a real process group would wait for it."""
    from extract.store.dist import World

    cfg = config(tmp_path / "r", n=7)

    class Fake(World):  # a process group of two whose collectives are run by hand
        def broadcast(self, obj):
            return obj

        def barrier(self):
            return None

    class Rank1(Fake):
        def all_sum(self, value):
            assert value == 3  # shards 1 and 3 of 0..3: images 2, 3 and 6
            return value

    class Rank0(Fake):
        def all_sum(self, value):
            line = sample_folder.sample_into(cfg, TINY, Rank1(1, 2), torch.device("cpu"))
            assert line == "rank 1: 3 images drawn"
            return value + 3

    assert "7 images (7 drawn now" in sample_folder.sample_into(cfg, TINY, Rank0(0, 2), torch.device("cpu"))
    sample(config(tmp_path / "single", n=7))
    a, b = (np.load(tmp_path / d / "samples_7x32x32x3.npz")["arr_0"] for d in ("r", "single"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_class_conditional_presets_get_labels_and_write_them(tmp_path, monkeypatch):
    cond = dataclasses.replace(TINY, name="tiny-cond", class_cond=True)
    monkeypatch.setitem(PRESETS, "tiny-cond", cond)
    sample(config(tmp_path / "all", model="tiny-cond", n=3))
    sample(config(tmp_path / "one", model="tiny-cond", n=3, class_label=7))
    every, seven = (np.load(tmp_path / d / "samples_3x32x32x3.npz") for d in ("all", "one"))
    assert every["arr_1"].tolist() == [0, 1, 2] and seven["arr_1"].tolist() == [7, 7, 7]
    assert not np.array_equal(every["arr_0"][0], seven["arr_0"][0])  # the label reaches the model
    with pytest.raises(ValueError, match="tiny is unconditional"):
        sample(config(tmp_path / "x", class_label=3))


def test_the_grid_is_a_runs_first_images(tmp_path):
    sample(config(tmp_path / "s", n=4))
    assert "4 samples from random-init" in sampling.grid(config(tmp_path / "g.png", n=4))
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    first = np.load(tmp_path / "s" / "samples_4x32x32x3.npz")["arr_0"][0]
    assert np.abs(grid[2:34, 2:34].astype(int) - first.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--eta", "0.5"], "--eta applies to --sampler ddim only"),
        (["--class-label", "3"], "tiny is unconditional"),
        (["--class-label", "cat"], "expected a class number or 'all'"),
        (["--sampler", "ddim", "--steps", "999"], "--steps 999 with --sampler ddim: cannot create exactly"),
        (["--ckpt", "missing.pt", "--no-random-init"], "checkpoint not found: missing.pt"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as done:
        main(
            [
                "sample",
                "--model",
                "tiny",
                "--random-init",
                "--n",
                "2",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "s"),
                "--no-progress",
                *args,
            ]
        )
    err = capsys.readouterr().err
    assert (
        done.value.code == 2
        and message in err
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    )


def test_a_folder_being_sampled_into_is_refused_through_the_writers_lock(tmp_path):
    from extract.store.lock import StoreLock

    out = tmp_path / "s"
    lock = StoreLock(
        out / sample_folder.STORE_NAME
    ).acquire()  # held by a live process, as by a running sample
    try:
        with pytest.raises(ValueError, match="is being written by another"):
            sample(config(out, n=2))
        assert not (out / "png").exists()  # refused before the folder was touched
    finally:
        lock.release()
    assert "2 images (2 drawn now" in sample(config(out, n=2))
