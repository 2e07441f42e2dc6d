"""Heads: shapes, options, and each head learning separable synthetic features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.store.schema import FeatureKey
from probe.grid import TrainSettings
from probe.heads import HEADS, build_head, parse_head_options, takes_parts
from probe.run import ProbeConfig, probe
from tests.probe.stores import blobs, make_store

SMALL = {
    "linear": (),
    "mlp": ("hidden=64",),
    "cnn": ("channels=32",),
    "attention": ("width=32", "heads=4", "depth=1"),
    "paper-attention": ("width=32", "heads=4", "depth=1"),
    "paper-mlp": ("hidden=64",),
    "paper-fusion": ("width=32", "heads=4"),
}


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_maps_a_feature_map_to_class_logits(name):
    options = parse_head_options(SMALL[name])
    if takes_parts(name):  # the grid tells such heads which key each part of the input is
        options["parts"] = ((10, 7, 8, 3, 3),)
    head = build_head(name, (8, 3, 3), 5, options).eval()
    assert head(torch.randn(4, 8, 3, 3)).shape == (4, 5)


def test_attention_head_projects_tokens_only_when_channels_differ_from_width():
    assert isinstance(
        build_head("attention", (32, 2, 2), 3, {"width": 32, "heads": 4}).proj, torch.nn.Identity
    )
    assert isinstance(build_head("attention", (16, 2, 2), 3, {"width": 32, "heads": 4}).proj, torch.nn.Linear)


def test_linear_head_batchnorm_has_no_affine_parameters():
    head = build_head("linear", (6, 1, 1), 3, {"batchnorm": True})
    assert head.norm.affine is False and sum(p.numel() for p in head.parameters()) == 6 * 3 + 3


def test_unknown_head_and_bad_options_are_named():
    with pytest.raises(
        ValueError,
        match="unknown head 'svm'; choose one of: linear, mlp, cnn, attention, "
        "paper-attention, paper-mlp, paper-fusion, logreg, knn",
    ):
        build_head("svm", (4, 1, 1), 2)
    with pytest.raises(ValueError, match="head option 'depth'"):
        parse_head_options(["depth"])
    with pytest.raises(ValueError, match="expected NAME=VALUE with NAME one of"):
        parse_head_options(["colour=red"])


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """4 well separated classes in an (8, 2, 2) map: train 480 rows, test 160 rows."""
    root = tmp_path_factory.mktemp("separable")
    key = FeatureKey(10, 7, 2)
    x, y, centres = blobs(480, 4, 32, seed=0, spread=1.0, shape=(8, 2, 2))
    xt, yt, _ = blobs(160, 4, 32, seed=1, spread=1.0, shape=(8, 2, 2), centres=centres)
    make_store(root / "train.zarr", {key: x}, y)
    make_store(root / "test.zarr", {key: xt}, yt, split="test")
    return root


@pytest.mark.parametrize("heads", [("linear",), ("mlp",), ("cnn",), ("attention",), ("logreg",), ("knn",)])
def test_each_head_reaches_high_accuracy_on_separable_features(separable, tmp_path, heads):
    options = SMALL.get(heads[0], ())
    cfg = ProbeConfig(
        train=separable / "train.zarr",
        test=separable / "test.zarr",
        heads=heads,
        head_options=options,
        training=TrainSettings(epochs=6, batch_size=32),
        lrs=(3e-3,),
        results=tmp_path,
        progress=False,
        knn_k=(10,),
    )
    result = probe(cfg)
    assert result["test"]["top1"] >= 95.0, result["test"]["top1"]
    assert result["val"]["rows"] == 48 and result["test"]["rows"] == 160
    assert np.array(result["test"]["confusion"]).sum() == 160


def test_attention_token_side_cuts_a_large_map_into_patch_tokens_and_drops_no_value():
    head = build_head("attention", (3, 5, 7), 2, {"width": 32, "heads": 4, "token_side": 2})
    assert head.patch == 4 and head.pos.shape == (1, 2 * 2 + 1, 32) and head.proj.in_features == 3 * 4 * 4
    x = torch.randn(2, 3, 5, 7)
    padded = torch.zeros(2, 3, 8, 8)
    padded[:, :, :5, :7] = x
    plain = torch.stack(
        [
            torch.stack(
                [
                    padded[n, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].reshape(-1)
                    for i in range(2)
                    for j in range(2)
                ]
            )
            for n in range(2)
        ]
    )  # a patch's values channel-major, then row, then column; patches row-major
    assert torch.equal(head.tokens(x), plain)
    assert head(x).shape == (2, 2)


def test_attention_token_side_leaves_a_small_map_and_the_default_head_as_they_were():
    small = build_head("attention", (8, 4, 4), 3, {"width": 32, "heads": 4, "token_side": 8})
    assert small.patch == 1 and small.pos.shape == (1, 17, 32)
    torch.manual_seed(0)
    before = build_head("attention", (8, 4, 4), 3, {"width": 32, "heads": 4})
    torch.manual_seed(0)
    capped = build_head("attention", (8, 4, 4), 3, {"width": 32, "heads": 4, "token_side": 4})
    x = torch.randn(5, 8, 4, 4)
    assert torch.equal(before.eval()(x), capped.eval()(x))
    with pytest.raises(ValueError, match="token_side must be at least 1"):
        build_head("attention", (8, 4, 4), 3, {"width": 32, "heads": 4, "token_side": 0})
