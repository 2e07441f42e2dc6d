"""The cached-vs-on-line benchmark: on-line epochs draw what the cache stores as views, arms
train for the same steps, and the intervals are the textbook t intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from extract.data.augment import AUGMENTATIONS
from extract.data.registry import open_dataset
from extract.models.adm import load_checkpoint, shipped_weights
from extract.models.adm_presets import get_preset
from extract.run import extract
from extract.store.config import ExtractConfig, from_flat
from extract.store.schema import FeatureKey, open_complete
from probe.bench.workflow import (
    WorkflowSettings,
    bench_workflow,
    format_table,
    held_out,
    interval,
    online_batches,
)


@pytest.mark.parametrize("aug", ["gd-crop-flip", "none"])
def test_online_epoch_e_is_the_cached_view_e(fmnist_env, tmp_path, aug):
    """On-line epoch e sees each image exactly as `extract run --views K` stores its view e:
    the same crop and flip (or center crop) and the same noise; other epochs see other views."""
    key, seed, views = FeatureKey(10, 9, None), 5, 3
    extract(
        from_flat(
            ExtractConfig,
            out=tmp_path / "s.zarr",
            model="demo-fmnist",
            data="fashion-mnist",
            split="train",
            ts=(10,),
            blocks=(9,),
            pools=(None,),
            limit=6,
            views=views,
            aug=aug,
            seed=seed,
            progress=False,
        )
    )
    store = open_complete(tmp_path / "s.zarr")
    cached, index = np.asarray(store.array(key)[:], np.float32), store.index()  # (6, views, 64, 8, 8)
    preset = get_preset("demo-fmnist")
    model, source = (
        load_checkpoint(preset, shipped_weights(preset)),
        open_dataset("fashion-mnist", None, "train"),
    )
    labels = source.labels[index].astype(np.int64)
    augment = None if aug == "none" else AUGMENTATIONS[aug]
    for epoch in range(views):
        (values, y), *_ = list(
            online_batches(
                model, preset, source, index, labels, key, augment=augment, batch=6, seed=seed, epoch=epoch
            )
        )
        got = values[key].astype(np.float32)
        position = {int(i): r for r, i in enumerate(index)}
        rows = [position[int(i)] for i in index[np.random.default_rng([seed, epoch, 23]).permutation(6)]]
        assert np.array_equal(y, labels[rows])
        assert np.allclose(got, cached[rows, epoch], atol=2e-3, rtol=2e-3), np.abs(
            got - cached[rows, epoch]
        ).max()
        other = cached[rows, (epoch + 1) % views]
        assert np.abs(got - other).max() > 0.1  # a different view is far from this one


def test_held_out_rows_are_disjoint_and_seeded():
    train, val = held_out(100, 30, seed=1)
    assert val.sum() == 30 and train.sum() == 70 and not (train & val).any()
    assert np.array_equal(val, held_out(100, 30, seed=1)[1]) and not np.array_equal(
        val, held_out(100, 30, seed=2)[1]
    )


def test_interval_is_the_t_interval():
    got = interval([1.0, 2.0, 3.0])
    assert got["mean"] == 2.0 and got["sd"] == 1.0
    assert got["ci95"] == round(4.303 / math.sqrt(3), 2)


@pytest.mark.slow  # trains or runs a whole experiment (over 9 s)
def test_every_arm_trains_the_same_steps(fmnist_env):
    s = WorkflowSettings(
        images=64,
        val_images=32,
        test_images=40,
        epochs=4,
        batch=16,
        views=(1, 2),
        seeds=(0, 1),
        curve_every=2,
    )
    r = bench_workflow(s)
    arms = [a["arm"] for a in r["summary"]]
    assert arms == ["on-line, crop+flip+noise", "on-line, noise", "cached, 1 view", "cached, 2 views"]
    assert len(r["runs"]) == 2 * len(arms) and r["settings"]["steps"] == 4 * (64 // 16)
    for run in r["runs"]:
        assert (
            run["steps"] == r["settings"]["steps"]
        )  # matched optimizer steps, counted from the samples trained
        assert [p[0] for p in run["curve"]] == [8, 16] and all(
            0 <= v <= 100 for p in run["curve"] for v in p[1:]
        )
        assert set(run["test_top1"]) == {"linear", "paper-attention"}
        assert (run["views"] is None) == (run["extract_seconds"] == 0.0)
    online = [a for a in r["runs"] if a["views"] is None]
    assert (
        online[0]["test_top1"] != online[1]["test_top1"] or online[0]["curve"] != online[1]["curve"]
    )  # crops change what is learnt
    for a in r["summary"]:
        assert a["test_top1"]["linear"]["values"] == [
            x["test_top1"]["linear"] for x in r["runs"] if x["arm"] == a["arm"]
        ]
    table = format_table(r)
    assert (
        "cached, 2 views" in table
        and "95% t interval" in table
        and f"{r['settings']['steps']} steps" in table
    )
