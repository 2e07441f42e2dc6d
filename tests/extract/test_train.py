"""The demo-model trainer: exact resume, export that --ckpt loads, sampling."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import extract.generate.train as train_mod
from extract.generate.run_files import read_log
from extract.generate.sampling import sample_grid
from extract.generate.train import TrainConfig, export_ema, train
from extract.models.adm import load_checkpoint
from extract.models.adm_presets import get_preset
from tests.conftest import run_tiny


def config(out, **kw) -> TrainConfig:
    base = dict(
        out=str(out), batch_size=4, max_images=24, save_every=2, log_every=1, warmup_steps=2, threads=1
    )
    return TrainConfig(**{**base, **kw})


def state(out):
    return torch.load(out / "train_state.pt", weights_only=True)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_run_stopped_at_a_step_keeps_the_whole_schedule_and_resumes_to_the_unbroken_weights(
    tmp_path, fmnist_env
):
    train(config(tmp_path / "whole"))
    summary = train(config(tmp_path / "staged", stop_step=3))
    assert summary["step"] == 3 and state(tmp_path / "staged")["step"] == 3
    # the learning rate at each step is the 6-step schedule's, not a 3-step one's
    assert [r["lr"] for r in read_log(tmp_path / "staged")] == [
        r["lr"] for r in read_log(tmp_path / "whole")
    ][:3]
    assert train(config(tmp_path / "staged"))["step"] == 6
    whole, staged = state(tmp_path / "whole"), state(tmp_path / "staged")
    assert all(torch.equal(whole["ema"][k], staged["ema"][k]) for k in whole["ema"])


def test_resuming_with_another_batch_size_is_refused(tmp_path, fmnist_env):
    train(config(tmp_path / "r", max_images=8))
    with pytest.raises(ValueError, match="cannot resume with a different batch_size"):
        train(config(tmp_path / "r", batch_size=2))


@pytest.mark.slow
def test_exported_ema_loads_as_a_checkpoint_and_extracts(tmp_path, fmnist_env):
    train(config(tmp_path / "r", max_images=8))
    meta = export_ema(tmp_path / "r", tmp_path / "demo.pt")
    assert meta["step"] == 2 and meta["preset"]["name"] == "demo-fmnist"
    model = load_checkpoint(get_preset("demo-fmnist"), tmp_path / "demo.pt")
    ema = torch.load(tmp_path / "r" / "ema.pt", weights_only=True)
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    summary = run_tiny(
        tmp_path / "s.zarr",
        model="demo-fmnist",
        random_init=False,
        ckpt=tmp_path / "demo.pt",
        blocks=(24,),
        pools=(2,),
    )
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


def test_another_trainers_checkpoint_is_refused_in_one_line(tmp_path, fmnist_env):
    (tmp_path / "r").mkdir()
    # a BiGAN run's
    torch.save(
        {"config": {}, "model": {}, "opt_d": {}, "opt_ge": {}, "step": 3}, tmp_path / "r" / "train_state.pt"
    )
    with pytest.raises(
        ValueError, match="train_state.pt: not a demo U-Net training checkpoint; use a new --out"
    ):
        train(config(tmp_path / "r"))


def test_each_log_line_gives_this_sittings_rate_and_the_eta(tmp_path, fmnist_env, capfd):
    train(config(tmp_path / "r", max_images=8, log_every=1))
    lines = [x for x in capfd.readouterr().err.splitlines() if x.startswith("train demo-fmnist: step")]
    assert len(lines) == 2 and all(" img/s, ETA " in x and ", loss " in x for x in lines), lines
    assert lines[-1].startswith("train demo-fmnist: step 2/2,") and lines[-1].endswith("ETA 00:00")


def test_fp16_export_halves_the_file_and_loads_as_fp32(tmp_path, fmnist_env):
    train(config(tmp_path / "r", max_images=8))
    export_ema(tmp_path / "r", tmp_path / "fp32.pt")
    export_ema(tmp_path / "r", tmp_path / "fp16.pt", "float16")
    assert (tmp_path / "fp16.pt").stat().st_size < 0.55 * (tmp_path / "fp32.pt").stat().st_size
    model = load_checkpoint(get_preset("demo-fmnist"), tmp_path / "fp16.pt")
    ema = torch.load(tmp_path / "r" / "ema.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, ema[k].half().float()), k


@pytest.mark.slow
def test_a_run_started_from_weights_keeps_snapshots_and_records_its_init(tmp_path, fmnist_env):
    train(config(tmp_path / "first", max_images=8))
    export_ema(tmp_path / "first", tmp_path / "start.pt")
    start = torch.load(tmp_path / "start.pt", weights_only=True)
    train(
        config(
            tmp_path / "next",
            max_images=16,
            init=str(tmp_path / "start.pt"),
            keep_every=2,
            lr=1e-12,
            warmup_steps=0,
        )
    )
    snaps = sorted(p.name for p in (tmp_path / "next" / "snapshots").iterdir())
    assert snaps == ["ema-step2.pt", "ema-step4.pt"]
    meta = json.loads((tmp_path / "next" / "train_meta.json").read_text())
    assert meta["init"]["path"] == str(tmp_path / "start.pt") and len(meta["init"]["sha256"]) == 64
    # at a vanishing lr the EMA stays at the init weights: the run really started from them
    snap = torch.load(tmp_path / "next" / "snapshots" / "ema-step4.pt", weights_only=True)
    assert all(torch.allclose(snap[k], start[k].float(), atol=1e-6) for k in start)
    with pytest.raises(ValueError, match="cannot resume with a different init"):
        train(config(tmp_path / "next", max_images=16, keep_every=2))


def test_init_weights_of_another_model_are_one_clear_error(tmp_path, fmnist_env):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not demo-fmnist's weights"):
        train(config(tmp_path / "r", init=str(tmp_path / "foreign.pt")))
