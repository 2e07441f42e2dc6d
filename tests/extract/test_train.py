"""The demo-model trainer: exact resume, export that --ckpt loads, sampling."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import extract.generate.train as train_mod
from extract.generate.train import TrainConfig, export_ema, read_log, sample_grid, train
from extract.models.adm import load_checkpoint
from extract.models.adm_presets import get_preset
from tests.conftest import run_tiny


def config(out, **kw) -> TrainConfig:
    base = dict(out=str(out), batch_size=4, max_images=24, save_every=2, log_every=1, warmup_steps=2, threads=1)
    return TrainConfig(**{**base, **kw})


def state(out):
    return torch.load(out / "train_state.pt", weights_only=True)


def test_a_killed_run_resumes_to_the_same_weights_as_an_unbroken_one(tmp_path, fmnist_env, monkeypatch):
    train(config(tmp_path / "whole"))
    calls = {"n": 0}
    real = train_mod.update_ema

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "update_ema", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "broken"))
    assert state(tmp_path / "broken")["step"] == 4  # the last checkpoint before the kill
    monkeypatch.setattr(train_mod, "update_ema", real)
    summary = train(config(tmp_path / "broken"))
    assert summary["step"] == 6 and summary["images_seen"] == 24
    whole, resumed = state(tmp_path / "whole"), state(tmp_path / "broken")
    for part in ("model", "ema"):
        for k in whole[part]:
            assert torch.equal(whole[part][k], resumed[part][k]), (part, k)
    log = read_log(tmp_path / "broken")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and all(r["loss"] > 0 for r in log)


def test_resuming_with_another_batch_size_is_refused(tmp_path, fmnist_env):
    train(config(tmp_path / "r", max_images=8))
    with pytest.raises(ValueError, match="cannot resume with a different batch_size"):
        train(config(tmp_path / "r", batch_size=2))


def test_exported_ema_loads_as_a_checkpoint_and_extracts(tmp_path, fmnist_env):
    train(config(tmp_path / "r", max_images=8))
    meta = export_ema(tmp_path / "r", tmp_path / "demo.pt")
    assert meta["step"] == 2 and meta["preset"]["name"] == "demo-fmnist"
    model = load_checkpoint(get_preset("demo-fmnist"), tmp_path / "demo.pt")
    ema = torch.load(tmp_path / "r" / "ema.pt", weights_only=True)
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    summary = run_tiny(tmp_path / "s.zarr", model="demo-fmnist", random_init=False, ckpt=tmp_path / "demo.pt", blocks=(24,), pools=(2,))
    assert summary.shards_done == summary.shards_total
    (tmp_path / "grid.png").unlink(missing_ok=True)
    line = sample_grid("demo-fmnist", tmp_path / "demo.pt", 6, 3, 0, tmp_path / "grid.png")
    assert "6 samples" in line and Image.open(tmp_path / "grid.png").size == (3 * 34 + 2, 2 * 34 + 2)
    assert json.loads((tmp_path / "r" / "train_meta.json").read_text())["images_seen"] == 8


def test_a_torn_training_checkpoint_is_one_clear_error(tmp_path, fmnist_env):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "train_state.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match="not a loadable training checkpoint"):
        train(config(tmp_path / "r"))


def test_fp16_export_halves_the_file_and_loads_as_fp32(tmp_path, fmnist_env):
    train(config(tmp_path / "r", max_images=8))
    export_ema(tmp_path / "r", tmp_path / "fp32.pt")
    export_ema(tmp_path / "r", tmp_path / "fp16.pt", "float16")
    assert (tmp_path / "fp16.pt").stat().st_size < 0.55 * (tmp_path / "fp32.pt").stat().st_size
    model = load_checkpoint(get_preset("demo-fmnist"), tmp_path / "fp16.pt")
    ema = torch.load(tmp_path / "r" / "ema.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, ema[k].half().float()), k
