"""The `paper-*` heads equal diffssl's heads, re-stated here from their description and not
from our head code: same parameter count, and the same output for the same weights and input."""

from __future__ import annotations

import math

import pytest
import torch

from probe.heads import build_head


def _layer_norm(t, g, b):
    mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
    return (t - mu) / torch.sqrt(var + 1e-5) * g + b


def reference_pre(x, ln_w, ln_b, conv_w, conv_b):
    """Pool to min(size, 16), LayerNorm over each sample's (C, s, s), 1x1 conv -> (N, s*s, width) tokens."""
    n = len(x)
    x = torch.nn.functional.adaptive_avg_pool2d(x, min(x.shape[-1], 16))
    mean = x.reshape(n, -1).mean(1).view(n, 1, 1, 1)
    var = x.reshape(n, -1).var(1, unbiased=False).view(n, 1, 1, 1)
    x = (x - mean) / torch.sqrt(var + 1e-5) * ln_w + ln_b
    x = torch.einsum("nchw,oc->nohw", x, conv_w[:, :, 0, 0]) + conv_b.view(1, -1, 1, 1)
    return x.flatten(2).transpose(1, 2)


def reference_blocks(tokens, blocks, heads):
    """Pre-norm transformer blocks; each of blocks:
    (g1, b1, qkv_w, proj_w, proj_b, g2, b2, fc1_w, fc1_b, fc2_w, fc2_b)."""
    n, _, width = tokens.shape
    for g1, b1, qkv_w, proj_w, proj_b, g2, b2, fc1_w, fc1_b, fc2_w, fc2_b in blocks:
        y = _layer_norm(tokens, g1, b1) @ qkv_w.T  # no qkv bias
        q, k, v = y.reshape(n, -1, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attn = ((q * (width // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        tokens = tokens + ((attn @ v).transpose(1, 2).reshape(n, -1, width) @ proj_w.T + proj_b)
        hid = _layer_norm(tokens, g2, b2) @ fc1_w.T + fc1_b
        hid = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))  # exact GELU
        tokens = tokens + hid @ fc2_w.T + fc2_b
    return tokens


def reference_fusion(maps_by_t, pre, cls, blocks, fc_w, fc_b, heads):
    """diffssl's AttentionFusion: maps_by_t: t -> [(b, map)]; pre: b -> pre-layer weights."""
    outs = []
    for t in sorted(maps_by_t):
        tokens = [reference_pre(m, *pre[b]) for b, m in maps_by_t[t]]
        n = len(tokens[0])
        seq = reference_blocks(torch.cat([cls.expand(n, -1, -1), *tokens], 1), blocks, heads)
        outs.append(seq[:, 0])
    return torch.cat(outs, 1) @ fc_w.T + fc_b


def reference_attention(x, cls, w, heads, depth):
    """diffssl's AttentionFusion for one block and one t. cls: the CLS token; w: the other
    weights in the order diffssl's modules hold them (pre-layer, blocks, classifier)."""
    w = list(w)
    pre, rest = w[:4], w[4:]
    blocks = [rest[11 * i : 11 * (i + 1)] for i in range(depth)]
    fc_w, fc_b = rest[11 * depth :]
    return reference_fusion({0: [(0, x)]}, {0: pre}, cls, blocks, fc_w, fc_b, heads)


def test_paper_attention_has_diffssl_parameter_count_at_imagenet_b24():
    """C=1024, 16x16, 1000 classes: 27,786,216 parameters (diffssl's head, counted from its code)."""
    with torch.device("meta"):
        head = build_head("paper-attention", (1024, 16, 16), 1000)
    assert sum(p.numel() for p in head.parameters()) == 27_786_216


@pytest.mark.parametrize("shape,width,heads", [((8, 4, 4), 16, 4), ((12, 20, 20), 32, 8)])
def test_paper_attention_equals_the_reference(shape, width, heads):
    torch.manual_seed(0)
    head = build_head("paper-attention", shape, 5, {"width": width, "heads": heads}).eval()
    for p in head.parameters():  # non-trivial norms, biases and CLS token
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3, *shape)
    named = dict(head.named_parameters())
    expected = reference_attention(x, named.pop("cls"), list(named.values()), heads, depth=2)
    torch.testing.assert_close(head(x), expected, rtol=1e-4, atol=1e-4)
    assert not any("pos" in name for name, _ in head.named_parameters())  # no position embedding


def test_paper_mlp_is_linear_relu_without_batchnorm():
    torch.manual_seed(0)
    head = build_head("paper-mlp", (4, 2, 2), 3, {"hidden": (7, 5)})
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    x = torch.randn(6, 4, 2, 2)
    (w1, b1), (w2, b2), (w3, b3) = [
        (m.weight, m.bias) for m in head.modules() if isinstance(m, torch.nn.Linear)
    ]
    expected = torch.relu(torch.relu(x.flatten(1) @ w1.T + b1) @ w2.T + b2) @ w3.T + b3
    torch.testing.assert_close(head(x), expected)


def test_paper_heads_train_in_a_grid_and_their_head_files_reload(tmp_path, capsys):
    from extract.store.schema import FeatureKey
    from probe.config import ProbeConfig, TrainSettings
    from probe.evaluate import evaluate_head
    from probe.run import probe
    from tests.probe.stores import blobs, make_store

    key = FeatureKey(10, 7, 2)
    x, y, centres = blobs(240, 3, 16, seed=0, spread=1.0, shape=(4, 2, 2))
    xt, yt, _ = blobs(90, 3, 16, seed=1, spread=1.0, shape=(4, 2, 2), centres=centres)
    make_store(tmp_path / "train.zarr", {key: x}, y)
    make_store(tmp_path / "test.zarr", {key: xt}, yt, split="test")
    result = probe(
        ProbeConfig(
            train=tmp_path / "train.zarr",
            test=tmp_path / "test.zarr",
            heads=("paper-attention", "paper-mlp"),
            head_options=("width=16", "heads=4", "hidden=32"),
            lrs=(3e-3,),
            results=tmp_path / "r",
            progress=False,
            training=TrainSettings(epochs=15, batch_size=32),
        )
    )
    assert {m["head"] for m in result["members"]} == {"paper-attention", "paper-mlp"}
    assert all(m["test"]["top1"] >= 90 for m in result["members"]), [
        m["test"]["top1"] for m in result["members"]
    ]
    again = evaluate_head(tmp_path / "r" / f"{result['name']}.head.pt", tmp_path / "test.zarr")
    assert again["top1"] == result["test"]["top1"]
    # the same features extracted at another micro-batch on a GPU: evaluated, with one warning line
    make_store(tmp_path / "test-gpu.zarr", {key: xt}, yt, split="test", micro_batch=64, device_type="cuda")
    capsys.readouterr()
    other = evaluate_head(tmp_path / "r" / f"{result['name']}.head.pt", tmp_path / "test-gpu.zarr")
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert (
        other["top1"] == result["test"]["top1"]
        and len(warned) == 1
        and "micro_batch" in warned[0]
        and "device_type" in warned[0]
    )


def test_paper_fusion_equals_the_reference_over_two_t_and_two_blocks():
    """t in {90, 150}, b in {19, 24} with maps of different sizes: one token sequence per t,
    pre-layers per block shared across t, the CLS outputs of the t's concatenated."""
    from extract.store.schema import FeatureKey
    from probe.grid import feature_set, head_for

    torch.manual_seed(0)
    shapes = {
        FeatureKey(90, 19, None): (6, 2, 2),
        FeatureKey(90, 24, None): (4, 4, 4),
        FeatureKey(150, 19, None): (6, 2, 2),
        FeatureKey(150, 24, None): (4, 4, 4),
    }
    fs = feature_set(tuple(shapes), shapes)
    head = head_for("paper-fusion", fs, 5, {"width": 16, "heads": 4}).eval()
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    maps = {k: torch.randn(3, *s) for k, s in shapes.items()}
    x = torch.cat([m.flatten(1) for m in maps.values()], 1).reshape(3, *fs.in_shape)
    named = dict(head.named_parameters())
    pre = {
        b: [
            named[f"pre.{b}.1.weight"],
            named[f"pre.{b}.1.bias"],
            named[f"pre.{b}.2.weight"],
            named[f"pre.{b}.2.bias"],
        ]
        for b in (19, 24)
    }
    blocks = [
        [
            named[f"blocks.{i}.{n}"]
            for n in (
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.proj.weight",
                "attn.proj.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.0.weight",
                "mlp.0.bias",
                "mlp.2.weight",
                "mlp.2.bias",
            )
        ]
        for i in range(2)
    ]
    by_t = {t: [(k.b, maps[k]) for k in shapes if k.t == t] for t in (90, 150)}
    expected = reference_fusion(
        by_t, pre, named["cls"], blocks, named["fc.weight"], named["fc.bias"], heads=4
    )
    torch.testing.assert_close(head(x), expected, rtol=1e-4, atol=1e-4)
    assert head.fc.in_features == 2 * 16  # one CLS output per t


def test_paper_fusion_trains_from_one_store_and_its_head_file_reloads(tmp_path):
    from extract.store.schema import FeatureKey
    from probe.config import ProbeConfig, TrainSettings
    from probe.evaluate import evaluate_head
    from probe.run import probe
    from tests.probe.stores import blobs, make_store

    keys = [FeatureKey(90, 19, 2), FeatureKey(90, 24, 1), FeatureKey(150, 19, 2), FeatureKey(150, 24, 1)]
    shapes = [(4, 2, 2), (16, 1, 1)] * 2
    train, test = {}, {}
    for key, shape in zip(keys, shapes):
        x, y, centres = blobs(
            240, 3, 16, seed=0, spread=1.0, shape=shape
        )  # the same rows and labels for every key
        xt, yt, _ = blobs(90, 3, 16, seed=1, spread=1.0, shape=shape, centres=centres)
        train[key], test[key] = x, xt
    make_store(tmp_path / "train.zarr", train, y)
    make_store(tmp_path / "test.zarr", test, yt, split="test")
    label = "+".join(k.label for k in keys)
    result = probe(
        ProbeConfig(
            train=tmp_path / "train.zarr",
            test=tmp_path / "test.zarr",
            heads=("paper-fusion",),
            features=(label,),
            head_options=("width=16", "heads=4"),
            lrs=(3e-3,),
            results=tmp_path / "r",
            progress=False,
            training=TrainSettings(epochs=15, batch_size=32),
        )
    )
    assert result["members"][0]["feature_set"] == label and result["test"]["top1"] >= 90
    again = evaluate_head(tmp_path / "r" / f"{result['name']}.head.pt", tmp_path / "test.zarr")
    assert again["top1"] == result["test"]["top1"]


def test_pooling_at_extraction_equals_the_fusion_heads_own_pooling_on_the_full_map():
    """b=30 stored at 16x16 (`--block-pool 30:max16`) gives the fusion head what it computes
    itself from the whole 64x64 map: the head pools every block to min(size, 16)."""
    from extract.models.pooling import pool
    from probe.paper_heads import PaperFusionHead

    torch.manual_seed(0)
    b24, b30 = torch.randn(3, 8, 16, 16), torch.randn(3, 4, 64, 64)
    full = PaperFusionHead(
        (8 * 256 + 4 * 4096, 1, 1), 5, parts=((150, 24, 8, 16, 16), (150, 30, 4, 64, 64)), width=32, heads=4
    ).eval()
    stored = PaperFusionHead(
        (8 * 256 + 4 * 256, 1, 1), 5, parts=((150, 24, 8, 16, 16), (150, 30, 4, 16, 16)), width=32, heads=4
    ).eval()
    stored.load_state_dict(
        full.state_dict()
    )  # the same parameters: the pre-layer of b=30 works at 16x16 in both
    with torch.no_grad():
        a = full(torch.cat([b24.flatten(1), b30.flatten(1)], 1)[..., None, None])
        b = stored(torch.cat([b24.flatten(1), pool(b30, 16).flatten(1)], 1)[..., None, None])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pool(b30, 16), torch.nn.AdaptiveAvgPool2d(16)(b30))


def test_a_block_pool_of_at_most_n_keeps_small_maps_whole():
    from extract.checks import row_shapes
    from extract.models.adm_presets import get_preset
    from extract.store.config import parse_block_pools
    from extract.store.schema import FeatureKey

    preset = get_preset("adm256-uncond")
    shapes = row_shapes(
        preset, (19, 24, 30), (150,), {19: (None,), 24: (None,), **parse_block_pools(("30:max16",))}
    )
    assert shapes == {
        FeatureKey(150, 19, None): (1024, 8, 8),
        FeatureKey(150, 24, None): (1024, 16, 16),
        FeatureKey(150, 30, 16): (512, 16, 16),
    }
    demo = row_shapes(get_preset("demo-fmnist"), (30,), (150,), parse_block_pools(("30:max16",)))
    assert list(demo) == [FeatureKey(150, 30, None)]  # 8x8 at the demo's scale: kept whole, as the head would
    with pytest.raises(ValueError, match="expected B:P"):
        parse_block_pools(("30",))
