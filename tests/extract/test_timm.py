"""timm models as a family: tiny random-weight timm networks written to a safetensors file here,
their stored rows against a plain forward_intermediates, early exit, batch-size invariance,
local weights only, and one-line errors."""

from __future__ import annotations

import json

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from extract.cli import cli
from extract.data.sources import fashion_mnist
from extract.models import timm_build
from extract.models.timm_options import TimmConfig, parse_model_args, timm_spec
from extract.models.timm_run import extract_timm
from extract.models.weights import CheckpointError
from extract.store.config import from_flat
from extract.store.schema import FeatureKey, FeatureStore

VIT_ARGS = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 32, "num_heads": 2}
VIT_WORDS = tuple(f"{k}={v}" for k, v in VIT_ARGS.items())
VIT = "timm:vit_tiny_patch16_224"
RESNET = "timm:test_resnet"


def _saved(tmp_path: Path, name: str, seed: int, **kwargs) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


@pytest.fixture
def vit(tmp_path):
    return _saved(tmp_path, "vit_tiny_patch16_224", 3, **VIT_ARGS)


@pytest.fixture
def resnet(tmp_path):
    return _saved(tmp_path, "test_resnet", 4)


def _run(out: Path, **values) -> FeatureStore:
    values = {"limit": 10, "progress": False, "batch_size": 4, "micro_batch": 4, **values}
    extract_timm(from_flat(TimmConfig, out=out, **values))
    return FeatureStore.open(out)


def plain_input(img: Image.Image, size: int, crop_pct: float, resample, mean, std) -> torch.Tensor:
    """timm's eval preprocessing, written out: short side to floor(size / crop_pct), center crop,
    [0, 1], (x - mean) / std. Fashion-MNIST images are square."""
    scale = math.floor(size / crop_pct)
    img = img.convert("RGB").resize((scale, scale), resample)
    left = int(round((scale - size) / 2))
    img = img.crop((left, left, left + size, left + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _stored(store: FeatureStore, key: FeatureKey) -> torch.Tensor:
    return torch.from_numpy(store.array(key)[:].astype(np.float32))


def test_model_arguments_are_literals_and_weights_arguments_are_refused():
    assert parse_model_args(("img_size=32", "act_layer=gelu", "x=(1, 2)")) == {
        "img_size": 32,
        "act_layer": "gelu",
        "x": (1, 2),
    }
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_model_args(("depth",))
    with pytest.raises(ValueError, match="weights come from --ckpt only"):
        parse_model_args(("pretrained=True",))
    assert (
        timm_spec(VIT, from_flat(TimmConfig, out=Path("."), model_args=VIT_WORDS).options).kwargs == VIT_ARGS
    )


def test_vit_rows_equal_forward_intermediates_for_grid_cls_and_mean(tmp_path, fmnist_env, vit):
    model, ckpt = vit
    common = dict(model=VIT, model_args=VIT_WORDS, ckpt=ckpt, blocks=(1, 3))
    grid = _run(tmp_path / "grid.zarr", pools=(None, 2, 1), **common)
    cls = _run(tmp_path / "cls.zarr", pools=(1,), tokens="cls", **common)
    mean = _run(tmp_path / "mean.zarr", pools=(1,), tokens="mean", **common)
    source = fashion_mnist(None, "train")
    x = torch.stack(
        [
            plain_input(source.load(int(i)), 32, 0.9, Image.Resampling.BICUBIC, (0.5,) * 3, (0.5,) * 3)
            for i in grid.index()
        ]
    )
    with torch.inference_mode():
        ref = model.forward_intermediates(
            x, indices=[0, 2], intermediates_only=True, return_prefix_tokens=True
        )
    for b, (patches, prefix) in zip((1, 3), ref):
        assert patches.shape == (10, 32, 4, 4)
        torch.testing.assert_close(
            _stored(grid, FeatureKey(0, b, None)), patches.half().float(), rtol=0, atol=2e-3
        )
        pooled = torch.nn.functional.avg_pool2d(patches, 2)  # 4x4 -> 2x2: each 2x2 quarter's mean
        torch.testing.assert_close(
            _stored(grid, FeatureKey(0, b, 2)), pooled.half().float(), rtol=0, atol=2e-3
        )
        torch.testing.assert_close(_stored(cls, FeatureKey(0, b, 1))[:, :, 0, 0], prefix[:, 0].half().float())
        patch_mean = patches.flatten(2).mean(2)
        torch.testing.assert_close(
            _stored(mean, FeatureKey(0, b, 1))[:, :, 0, 0], patch_mean, rtol=0, atol=2e-3
        )
        # the mean of patch tokens is the grid's --pool 1
        assert torch.equal(_stored(mean, FeatureKey(0, b, 1)), _stored(grid, FeatureKey(0, b, 1)))
    key = grid.attrs["key"]
    assert key["preprocessing"]["input_size"] == [3, 32, 32] and key["preprocessing"]["crop_pct"] == 0.9
    assert key["weights"]["checkpoint"] == ckpt.name and key["modules"] == {"1": "blocks.0", "3": "blocks.2"}
    assert grid.attrs["provenance"]["kind"] == "timm" and cls.attrs["key"]["tokens"] == "cls"


def test_cnn_stages_are_blocks_from_the_stem_with_the_configs_preprocessing(tmp_path, fmnist_env, resnet):
    model, ckpt = resnet
    store = _run(tmp_path / "r.zarr", model=RESNET, ckpt=ckpt, blocks=(1, "layer2"), pools=(1, 4), limit=6)
    assert store.attrs["key"]["modules"] == {"1": "act1", "3": "layer2"}
    cfg = store.attrs["key"]["preprocessing"]
    assert (cfg["input_size"], cfg["interpolation"], cfg["crop_pct"]) == ([3, 160, 160], "bilinear", 0.95)
    source = fashion_mnist(None, "train")
    x = torch.stack(
        [
            plain_input(source.load(int(i)), 160, 0.95, Image.Resampling.BILINEAR, (0.5,) * 3, (0.5,) * 3)
            for i in store.index()
        ]
    )
    with torch.inference_mode():
        stem, layer2 = model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    assert stem.shape[-1] == 80 and layer2.shape[-1] == 20  # strides 2 and 8
    for b, h in ((1, stem), (3, layer2)):
        expected = torch.nn.functional.adaptive_avg_pool2d(h, 4).half().float()
        torch.testing.assert_close(_stored(store, FeatureKey(0, b, 4)), expected, rtol=2e-3, atol=2e-3)


def test_the_forward_stops_after_the_deepest_block_asked_for(tmp_path, fmnist_env, vit, monkeypatch):
    ran: list[str] = []
    real = timm_build.build

    def hooked(spec, device="cpu"):
        model = real(spec, device)
        for i, block in enumerate(model.blocks):
            block.register_forward_hook(lambda m, a, o, i=i: ran.append(f"blocks.{i}"))
        model.norm.register_forward_hook(lambda m, a, o: ran.append("norm"))
        return model

    monkeypatch.setattr(timm_build, "build", hooked)
    _run(tmp_path / "s.zarr", model=VIT, model_args=VIT_WORDS, ckpt=vit[1], blocks=(2,), limit=4)
    assert ran and set(ran) == {"blocks.0", "blocks.1"}


def test_stores_are_bit_identical_whatever_the_batch_size(tmp_path, fmnist_env, vit):
    common = dict(model=VIT, model_args=VIT_WORDS, ckpt=vit[1], pools=(None,), limit=11)
    a = _run(tmp_path / "a.zarr", batch_size=3, **common)
    b = _run(tmp_path / "b.zarr", batch_size=11, **common)
    assert a.keys() == b.keys() and len(a.keys()) == 3
    for k in a.keys():
        assert np.array_equal(a.array(k)[:], b.array(k)[:]), k


def test_random_init_is_a_labelled_seeded_control(tmp_path, fmnist_env):
    common = dict(model=VIT, model_args=VIT_WORDS, random_init=True, blocks=(1,), pools=(1,), limit=4)
    a = _run(tmp_path / "a.zarr", **common)
    b = _run(tmp_path / "b.zarr", seed=1, **common)
    assert a.attrs["key"]["weights"] == {"random_init": True, "init_seed": 0, "control": "random weights"}
    assert a.attrs["provenance"]["weights"]["random_init"] is True
    assert not np.array_equal(a.array(FeatureKey(0, 1, 1))[:], b.array(FeatureKey(0, 1, 1))[:])


def test_timms_own_conversion_resamples_a_vits_position_embedding(tmp_path, fmnist_env, vit):
    larger = tuple(w.replace("img_size=32", "img_size=48") for w in VIT_WORDS)
    store = _run(
        tmp_path / "s.zarr", model=VIT, model_args=larger, ckpt=vit[1], blocks=(1,), pools=(None,), limit=2
    )
    assert store.attrs["key"]["weights"]["converted"] == "timm checkpoint_filter_fn"
    assert store.array(FeatureKey(0, 1, None)).shape == (2, 32, 6, 6)
    same = _run(tmp_path / "t.zarr", model=VIT, model_args=VIT_WORDS, ckpt=vit[1], limit=2)
    assert "converted" not in same.attrs["key"]["weights"]


def test_a_torch_training_checkpoint_loads_weights_only(tmp_path, fmnist_env, resnet):
    model, _ = resnet
    torch.save({"model": model.state_dict()}, tmp_path / "release.pth")  # as MAE's releases are saved
    store = _run(
        tmp_path / "s.zarr", model=RESNET, ckpt=tmp_path / "release.pth", blocks=(2,), pools=(1,), limit=2
    )
    assert store.attrs["key"]["weights"]["checkpoint"] == "release.pth"


def test_a_hugging_face_folder_gives_its_weights_file(tmp_path, vit):
    _, ckpt = vit
    repo = tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc" / "model.safetensors").write_bytes(ckpt.read_bytes())
    hub_id = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    want = repo / "snapshots" / "abc" / "model.safetensors"
    for given in (tmp_path / "hub", repo, want.parent, want):
        assert timm_build.weights_file(given, hub_id) == want
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        timm_build.weights_file(tmp_path / "hub", "timm/other")


def test_block_table_numbers_feature_info_from_one():
    rows = timm_build.block_table(
        timm_spec(VIT, from_flat(TimmConfig, out=Path("."), model_args=VIT_WORDS).options)
    )
    assert [(r.b, r.module, r.channels, r.height) for r in rows] == [
        (b, f"blocks.{b - 1}", 32, 4) for b in (1, 2, 3)
    ]
    assert "stride 8" in rows[0].layers
    result = CliRunner().invoke(cli, ["blocks", "--model", RESNET])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:2] == ["1", "act1"] and lines[5].split()[:2] == ["5", "layer4"]


# ---------------------------------------------------------------- bad input
def _model_args(args: dict) -> list[str]:
    return [word for k, v in args.items() for word in ("--model-arg", f"{k}={v}")]


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_line(result, *parts: str) -> None:
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for part in parts:
        assert part in result.output, result.output


def test_an_unknown_name_suggests_near_ones(tmp_path):
    _one_line(_cli("blocks", "--model", "timm:resnet5O"), "unknown timm model 'resnet5O'", "timm:resnet50")
    _one_line(
        _cli(
            "run", "--model", "timm:vit_base_patch16_224.maee", "--random-init", "--out", str(tmp_path / "x")
        ),
        "no pretrained tag 'maee'",
        "mae",
    )


def test_a_download_is_refused_naming_ckpt(tmp_path, fmnist_env):
    result = _cli("run", "--model", "timm:resnet18", "--limit", "2", "--out", str(tmp_path / "x.zarr"))
    _one_line(result, "--ckpt", "nothing is downloaded", "--random-init")
    assert not (tmp_path / "x.zarr").exists()


def test_a_checkpoint_that_does_not_fit_names_its_keys(tmp_path, fmnist_env, vit):
    _, ckpt = vit
    state = {k: v for k, v in timm_build.read_weights(ckpt).items() if k != "cls_token"}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 missing keys: cls_token; 1 unexpected keys: extra.weight"):
        _run(tmp_path / "s.zarr", model=VIT, model_args=VIT_WORDS, ckpt=tmp_path / "bad.safetensors")
    # the depth-3 file into a depth-2 network: blocks.2's keys are unexpected
    shallow = _model_args({**VIT_ARGS, "depth": 2})
    result = _cli(
        "run", "--model", VIT, *shallow, "--ckpt", str(ckpt), "--limit", "2", "--out", str(tmp_path / "t")
    )
    _one_line(result, "does not fit timm:vit_tiny_patch16_224", "unexpected keys: blocks.2.")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        timm_build.read_weights(tmp_path / "junk.safetensors")


def test_token_and_block_choices_that_do_not_apply_are_named(tmp_path, fmnist_env, resnet, vit):
    def fails(match, **values):
        with pytest.raises(ValueError, match=match):
            _run(tmp_path / "s.zarr", **values)

    fails("has no class token", model=RESNET, ckpt=resnet[1], tokens="cls", pools=(1,))
    vit_cls = dict(model=VIT, model_args=VIT_WORDS, ckpt=vit[1], tokens="cls")
    fails("--tokens cls and mean give one C x 1 x 1 map: --pool 1", **vit_cls)
    fails("block 6 is outside 1..5", model=RESNET, ckpt=resnet[1], blocks=(6,))
    fails(
        "no feature module 'layer9'; its blocks: act1, layer1",
        model=RESNET,
        ckpt=resnet[1],
        blocks=("layer9",),
    )
    fails("--ckpt or --random-init, not both", model=RESNET, ckpt=resnet[1], random_init=True)
    fails(
        "does not take these --model-arg values", model=RESNET, model_args=("img_size=3",), random_init=True
    )


def test_a_store_rebuilds_its_config_for_repair(tmp_path, fmnist_env):
    from extract.repair import _rebuild_config

    settings = dict(model=VIT, model_args=VIT_WORDS, random_init=True, limit=3, tokens="mean", pools=(1,))
    cfg = from_flat(TimmConfig, out=tmp_path / "s.zarr", progress=False, **settings)
    extract_timm(cfg)
    recorded = FeatureStore.open(tmp_path / "s.zarr").attrs["provenance"]["config"]
    assert _rebuild_config(TimmConfig, recorded, out=cfg.store.out, progress=False) == cfg  # as repair does


@pytest.mark.slow
def test_a_timm_store_from_the_command_line_probes_end_to_end(tmp_path, fmnist_env, vit, capsys):
    from probe.cli import main as probe_main

    _, ckpt = vit
    for split in ("train", "test"):
        args = ["run", "--model", VIT, *_model_args(VIT_ARGS), "--ckpt", str(ckpt)]
        args += ["--split", split, "-b", "3", "--tokens", "cls", "--pool", "1", "--no-progress"]
        result = _cli(*args, "--out", str(tmp_path / f"{split}.zarr"))
        assert result.exit_code == 0 and "tokens cls" in result.output, result.output
    with pytest.raises(SystemExit) as done:
        probe_main(
            ["train", "--train", str(tmp_path / "train.zarr"), "--test", str(tmp_path / "test.zarr")]
            + ["--lr", "1e-2", "--epochs", "2", "--batch-size", "32", "--results", str(tmp_path / "res")]
            + ["--name", "vit", "--no-progress"]
        )
    out = capsys.readouterr()
    assert done.value.code == 0, out.err
    assert "linear t0/b3/p1" in out.out and (tmp_path / "res" / "vit.json").is_file()
    # and aligns with another model's store of the same images: the demo U-Net's, paired by digest
    from analysis.cli import main as analysis_main

    unet = tmp_path / "unet.zarr"
    result = _cli(
        "run",
        "--model",
        "tiny",
        "--random-init",
        "--split",
        "test",
        "-b",
        "2",
        "--pool",
        "1",
        "--out",
        str(unet),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    with pytest.raises(SystemExit) as done:
        analysis_main(
            ["align", "--store", str(unet), "--store", str(tmp_path / "test.zarr"), "--k", "3"]
            + ["--out", str(tmp_path / "align.png"), "--no-progress"]
        )
    out = capsys.readouterr()
    assert done.value.code in (0, None), out.err
    record = json.loads((tmp_path / "align.json").read_text())
    assert record["paired_by"] == "pixel digest" and record["against"] == "t0/b3/p1"
    assert set(record["best"]) == {"mutual-knn", "cknna", "unbiased-cka"}
