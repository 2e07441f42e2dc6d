"""`--recipe paper` is diffssl's protocol; options given on the command line win."""

from __future__ import annotations

import json

import pytest

from probe.recipes import RECIPES, apply_recipe
from tests.probe.test_cli import cli


def test_the_paper_recipe_is_diffssls_protocol():
    paper = apply_recipe("paper", {"heads": ("linear", "paper-attention", "paper-fusion", "paper-mlp")})
    assert (paper["optimizer"], paper["momentum"], paper["schedule"], paper["step_epochs"]) == (
        "sgd",
        0.0,
        "step",
        7,
    )
    assert (paper["epochs"], paper["batch_size"], paper["wds"]) == (28, 128, (0.0,))  # 32 per GPU on 4 GPUs
    assert (
        paper["standardize"] is False and paper["val_fraction"] == 0.0
    )  # raw features, all of train, no selection
    assert dict(paper["head_lrs"]) == {
        "linear": 1e-2,
        "paper-attention": 5e-2,
        "paper-fusion": 5e-2,
        "paper-mlp": 1e-2,
    }
    ours = apply_recipe("diffprobe", {"heads": ("linear",), "epochs": 3, "lrs": (0.3,)})
    assert ours["optimizer"] == "adamw" and ours["epochs"] == 3 and ours["lrs"] == (0.3,)  # given options win


def test_probe_train_with_the_paper_recipe_records_it(stores, capsys):
    code, out, err = cli(
        [
            "train",
            "--train",
            str(stores / "train.zarr"),
            "--test",
            str(stores / "test.zarr"),
            "--recipe",
            "paper",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--results",
            str(stores / "r"),
            "--name",
            "p",
            "--no-progress",
        ],
        capsys,
    )
    assert code in (0, None), err
    result = json.loads((stores / "r" / "p.json").read_text())
    cfg = result["config"]
    assert cfg["recipe"] == "paper" and cfg["standardize"] is False and cfg["val_fraction"] == 0.0
    assert (
        cfg["training"]["optimizer"] == "sgd"
        and cfg["training"]["momentum"] == 0.0
        and cfg["training"]["epochs"] == 3
    )
    assert [m["lr"] for m in result["members"]] == [0.01] and result["test"]["top1"] > 90


def test_an_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="unknown recipe 'fast'; choose one of: diffprobe, paper"):
        apply_recipe("fast", {})
    assert set(RECIPES) == {"diffprobe", "paper"}


def test_a_heads_own_defaults_apply_when_every_head_of_the_run_agrees():
    from probe.recipes import apply_recipe

    unset = dict(lrs=(), wds=(), epochs=None, head_options=())
    attention = apply_recipe("diffprobe", dict(unset, heads=("attention",)))
    assert (
        attention["lrs"] == (1e-3,)
        and attention["wds"] == (0.05,)
        and attention["epochs"] == 3
        and attention["head_options"] == ("width=256",)
    )
    linear = apply_recipe("diffprobe", dict(unset, heads=("linear",)))
    assert linear["lrs"] == (1e-3, 3e-3, 1e-2) and linear["wds"] == (0.0, 0.05) and linear["epochs"] == 20
    both = apply_recipe(
        "diffprobe", dict(unset, heads=("linear", "attention"))
    )  # they disagree: the recipe's own defaults
    assert both["lrs"] == () and both["wds"] == (0.0,) and both["epochs"] == 20 and both["head_options"] == ()
    given = apply_recipe(
        "diffprobe", dict(unset, heads=("attention",), lrs=(0.5,), epochs=7)
    )  # the command line wins
    assert given["lrs"] == (0.5,) and given["epochs"] == 7 and given["wds"] == (0.05,)
    assert apply_recipe("paper", dict(unset, heads=("linear",)))["wds"] == (0.0,)  # the paper recipe has none
