"""The MAE baseline: masking and patch order, the encoder as timm's own forward, the lr schedule,
deterministic and exactly resumable training, and its encoder read back by the timm family
(stored rows equal the trained encoder's blocks on the inputs it was trained on)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import extract.generate.mae_train as mt
from extract.generate.mae_commands import _D
from extract.generate.mae_nets import ENCODER, ENCODER_ARGS, MAE, MaeArch, patchify, random_masking
from extract.generate.mae_train import MaeTrainConfig, export_mae, learning_rate, read_log, train
from extract.models.timm_run import extract_timm
from extract.models.timm_options import TimmConfig
from extract.store.config import from_flat
from extract.store.schema import FeatureKey, FeatureStore

# 8x8 patches of 32x32: 16 tokens, 4 kept
TINY_ARGS = ("img_size=32", "patch_size=8", "depth=2", "embed_dim=32", "num_heads=2", "num_classes=0")
TINY = dict(encoder_args=TINY_ARGS, decoder_dim=16, decoder_depth=1, decoder_heads=2)


def config(out, **kw) -> MaeTrainConfig:
    base = dict(out=str(out), batch_size=8, max_images=48, save_every=2, log_every=1, warmup_steps=2, **TINY)
    return MaeTrainConfig(**{**base, **kw})


def state(out):
    return torch.load(out / "train_state.pt", weights_only=True)


def tiny_model(seed: int = 0) -> MAE:
    torch.manual_seed(seed)
    return MAE(MaeArch(**TINY))


def test_patches_and_masks_keep_token_order():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # patch 1 is the top-right 4x4 square, its values (row, col, channel)
    assert torch.equal(p[0, 1], x[0, :, :4, 4:].permute(1, 2, 0).reshape(-1))
    keep, restore = random_masking(5, 16, 4, torch.Generator().manual_seed(1))
    assert keep.shape == (5, 4) and restore.shape == (5, 16)
    for k, r in zip(keep, restore):
        dropped = torch.tensor([i for i in range(16) if i not in k.tolist()])
        order = torch.cat([k, dropped[torch.randperm(12)]])
        assert torch.equal(torch.argsort(torch.argsort(order)).sort().values, torch.arange(16))
        assert torch.equal(order[r].sort().values, torch.arange(16)) and len(set(k.tolist())) == 4


def test_the_encoder_unmasked_is_timms_forward_features_and_the_loss_is_on_dropped_patches():
    model = tiny_model().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode(x, None), model.encoder.forward_features(x))
        keep, _ = random_masking(3, 16, 4, torch.Generator().manual_seed(0))
        assert model.encode(x, keep).shape == (3, 5, 32)
        loss, stats = model.loss(x, torch.Generator().manual_seed(0))
    assert loss.item() == stats["loss"] > 0 and stats["loss_visible"] > 0
    assert set(model.encoder.state_dict()) == set(MAE(MaeArch(**TINY)).encoder.state_dict())
    assert not any(k.startswith("head") and v.numel() for k, v in model.encoder.state_dict().items())


def test_lr_warms_up_then_falls_to_zero_and_command_defaults_are_the_configs():
    cfg = MaeTrainConfig(max_images=128 * 100, warmup_steps=10, lr=1e-3)
    lrs = [learning_rate(cfg, k) for k in range(cfg.max_steps)]
    assert lrs[0] == 1e-4 and lrs[9] == lrs[10] == 1e-3 and lrs[-1] < 1e-6
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    defaults = {f.name: f.default for f in dataclasses.fields(MaeTrainConfig)}
    assert {k: defaults[k] for k in _D} == _D


@pytest.mark.slow
def test_training_is_deterministic_logs_and_records_cpu_time(tmp_path, fmnist_env):
    a = train(config(tmp_path / "a", max_images=32))
    train(config(tmp_path / "b", max_images=32))
    init = mt.build(config(tmp_path / "x"))[0].state_dict()
    sa, sb = state(tmp_path / "a"), state(tmp_path / "b")
    assert a["step"] == 4 and a["parameters"]["encoder"] > 0 and a["cpu_seconds"] > 0
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert any(not torch.equal(sa["model"][k], init[k]) for k in init if k.startswith("encoder."))
    log = read_log(tmp_path / "a")
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["loss"] > 0 and r["lr"] > 0 for r in log)
    meta = json.loads((tmp_path / "a" / "train_meta.json").read_text())
    assert meta["config"]["encoder_args"] == list(TINY_ARGS) and 0 <= meta["cpu_seconds"] <= a["cpu_seconds"]
    assert meta["preprocessing"]["input_size"] == [3, 32, 32] and meta["data_fingerprint"]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights_as_an_unbroken_one(tmp_path, fmnist_env, monkeypatch):
    train(config(tmp_path / "whole"))
    calls, real = {"n": 0}, mt.train_step

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(mt, "train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "broken"))
    assert state(tmp_path / "broken")["step"] == 4
    monkeypatch.setattr(mt, "train_step", real)
    summary = train(config(tmp_path / "broken"))
    assert summary["step"] == 6 and summary["images_seen"] == 48
    whole, resumed = state(tmp_path / "whole"), state(tmp_path / "broken")
    for k in whole["model"]:
        assert torch.equal(whole["model"][k], resumed["model"][k]), k
    for i, s in whole["opt"]["state"].items():
        assert all(torch.equal(v, resumed["opt"]["state"][i][n]) for n, v in s.items()), i
    assert [r["step"] for r in read_log(tmp_path / "broken")] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="cannot resume with a different batch_size"):
        train(config(tmp_path / "broken", batch_size=4))


@pytest.mark.slow
def test_stored_rows_equal_the_trained_encoders_blocks(tmp_path, fmnist_env):
    cfg = config(tmp_path / "run", max_images=16, keep_every=1)
    train(cfg)
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "encoder-step1.safetensors",
        "encoder-step2.safetensors",
    ]
    weights = tmp_path / "mae.safetensors"
    meta = export_mae(tmp_path / "run", weights)
    assert meta["step"] == 2 and (tmp_path / "mae.train_log.jsonl").is_file()
    encoder = {
        k[len("encoder.") :]: v
        for k, v in state(tmp_path / "run")["model"].items()
        if k.startswith("encoder.")
    }
    saved = load_file(str(weights))
    assert set(saved) == set(encoder) and all(torch.equal(saved[k], encoder[k]) for k in encoder)
    out = tmp_path / "s.zarr"
    extract_timm(
        from_flat(
            TimmConfig,
            out=out,
            model=cfg.encoder,
            model_args=TINY_ARGS,
            ckpt=weights,
            split="train",
            pools=(None, 1),
            limit=10,
            batch_size=4,
            micro_batch=4,
            progress=False,
        )
    )
    store = FeatureStore.open(out)
    model = MAE(cfg.arch())
    model.load_state_dict(state(tmp_path / "run")["model"])
    images = mt.load_images(cfg, model)[0]  # the inputs it was trained on
    x = images[[int(i) for i in store.index()]]
    enc = model.eval().encoder
    with torch.no_grad():  # each block by hand, the class token dropped, tokens as the 4x4 grid
        h = torch.cat(
            [
                (enc.cls_token + enc.pos_embed[:, :1]).expand(len(x), -1, -1),
                enc.patch_embed(x) + enc.pos_embed[:, 1:],
            ],
            1,
        )
        for b, block in enumerate(enc.blocks, start=1):
            h = block(h)
            grid = h[:, 1:].transpose(1, 2).reshape(len(x), 32, 4, 4)
            full = torch.from_numpy(store.array(FeatureKey(0, b, None))[:].astype(np.float32))
            torch.testing.assert_close(full, grid.half().float(), rtol=0, atol=2e-3)
            pooled = torch.from_numpy(store.array(FeatureKey(0, b, 1))[:].astype(np.float32))
            torch.testing.assert_close(pooled, grid.mean((2, 3), keepdim=True), rtol=0, atol=2e-3)
    assert store.attrs["key"]["weights"]["checkpoint"] == weights.name


def test_the_matrix_runs_an_encoder_entry_without_noise_and_ships_the_mae_row():
    from pathlib import Path

    from diffprobe.matrix.entries import DatasetEntry, EntryError, ModelEntry, Region, models_from
    from diffprobe.matrix.kinds import KINDS, Split, check_model

    (mae,) = [e for e in models_from("diffprobe/experiments/demo-matrix.models.toml") if e.name == "mae"]
    check_model(mae)
    split = Split(DatasetEntry("fmnist", "fashion-mnist"), "train", 200, 3)
    step = KINDS[mae.kind].step(mae, split, Path("stores"), Region())
    argv = list(step.argv)
    assert argv[:3] == ["run", "--model", ENCODER] and "-t" not in argv and "--seed" not in argv
    assert argv[argv.index("--ckpt") + 1] == "extract/weights/mae-fmnist.safetensors"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--model-arg"] == list(ENCODER_ARGS)
    assert not KINDS["encoder"].seeded
    with pytest.raises(EntryError, match="kind encoder takes a timm:NAME"):
        check_model(ModelEntry(name="x", kind="encoder", model="nonsense"))


def test_the_commands_show_their_defaults_and_a_missing_run_is_one_line(tmp_path):
    import click

    from extract.generate.mae_commands import add_mae_commands

    group = click.Group()
    add_mae_commands(group)
    runner = CliRunner()
    shown = runner.invoke(group, ["train-mae", "--help"])
    assert shown.exit_code == 0 and "256000" in shown.output and "--mask-ratio" in shown.output
    missing = runner.invoke(
        group, ["export-mae", "--run", str(tmp_path), "--to", str(tmp_path / "x.safetensors")]
    )
    assert missing.exit_code != 0 and "no encoder.safetensors" in missing.output + str(missing.exception)
