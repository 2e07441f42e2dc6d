"""Noise levels: each family's schedule against the scheduler's own arithmetic, the store key's
record of them, and timesteps chosen by log-SNR."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from extract.cli import main
from extract.models.adm_flags import preset_from_flags
from extract.models.families import timesteps_at_log_snr
from extract.models.schedules import adm_preset_schedule, adm_schedule, schedule_from_record, ts_for_log_snr
from extract.store.config import ExtractConfig, from_flat


def gaussian_diffusion():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from guided_diffusion import gaussian_diffusion

    return gaussian_diffusion


@pytest.mark.parametrize(
    "kind,steps", [("linear", 1000), ("cosine", 1000), ("linear", 4000), ("cosine", 4000)]
)
def test_adm_schedules_equal_guided_diffusions(kind, steps):
    gd = gaussian_diffusion()
    ref = gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule(kind, steps),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.FIXED_SMALL,
        loss_type=gd.LossType.MSE,
    )
    ours = adm_schedule(kind, steps)
    np.testing.assert_allclose(ours.alpha, ref.sqrt_alphas_cumprod, rtol=1e-12)
    np.testing.assert_allclose(ours.sigma, ref.sqrt_one_minus_alphas_cumprod, rtol=1e-12)
    lam = np.log(ref.alphas_cumprod / (1 - ref.alphas_cumprod))
    np.testing.assert_allclose(ours.log_snr, lam, rtol=1e-9, atol=1e-9)
    assert (np.diff(ours.log_snr) < 0).all()  # noise grows with t


def test_the_same_t_is_a_different_noise_level_in_different_schedules():
    linear, cosine = adm_schedule("linear", 1000), adm_schedule("cosine", 1000)
    assert linear.level(150)["log_snr"] == pytest.approx(1.300, abs=1e-3)
    assert abs(cosine.level(150)["log_snr"] - linear.level(150)["log_snr"]) > 1.0
    # improved-diffusion's rescaled t: the network sees t * 1000 / steps, the noise is the schedule's
    p = preset_from_flags(
        "--flavor improved --image_size 32 --num_channels 32 --num_res_blocks 1 --diffusion_steps 4000"
    )
    s = adm_preset_schedule(p)
    assert s.steps == 4000 and s.level(2000)["model_t"] == 500.0
    assert s.level(2000)["log_snr"] == pytest.approx(adm_schedule("linear", 4000).level(2000)["log_snr"])


@pytest.mark.parametrize("schedule,start,end", [("scaled_linear", 0.00085, 0.012), ("linear", 0.0001, 0.02)])
def test_ddpm_schedules_equal_diffusers(schedule, start, end):
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule, beta_start=start, beta_end=end)
    record = {"kind": "ddpm", "beta_schedule": schedule, "beta_start": start, "beta_end": end, "steps": 1000}
    ours = schedule_from_record(record)
    abar = ref.alphas_cumprod.double().numpy()
    # both cumulative products run in float32 (numpy's and torch's): they agree to its rounding
    np.testing.assert_allclose(ours.alpha**2, abar, rtol=1e-5)
    np.testing.assert_allclose(ours.sigma**2, 1 - abar, rtol=0, atol=3e-7)


def test_flow_matching_noise_is_the_timestep_over_the_steps():
    """SD3's scheduler: its timesteps are its (shifted) sigmas times the training steps, so the
    noise at timestep t is s = t / steps, x_t = (1 - s) x0 + s eps."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    np.testing.assert_allclose(
        ref.timesteps.numpy() / 1000, ref.sigmas.numpy()[: len(ref.timesteps)], rtol=1e-5
    )
    ours = schedule_from_record({"kind": "flow", "steps": 1000})
    assert ours.sigma[250] == 0.25 and ours.alpha[250] == 0.75
    assert ours.level(500)["log_snr"] == pytest.approx(0.0) and ours.level(0)["log_snr"] is None
    z0, eps = np.ones(3), np.full(3, 2.0)
    sigma = float(ref.sigmas[10])
    t = int(round(sigma * 1000))
    expected = (1 - t / 1000) * z0 + t / 1000 * eps
    assert np.allclose(ours.alpha[t] * z0 + ours.sigma[t] * eps, expected)


def test_timesteps_by_log_snr_pick_the_nearest_and_name_the_range():
    s = adm_schedule("linear", 1000)
    ts = ts_for_log_snr(s, [0.0, 1.3, 1.3001])
    assert ts == (150, 258)
    for t, want in zip(ts, (1.3, 0.0)):
        assert abs(s.log_snr[t] - want) == pytest.approx(np.min(np.abs(s.log_snr - want)))
    with pytest.raises(ValueError, match=r"outside ADM linear \(1000 steps\)'s range \[-10.118, 9.210\]"):
        s.nearest_t(12.0)


def test_a_run_config_takes_its_timesteps_from_log_snr(tmp_path):
    cfg = from_flat(ExtractConfig, model="tiny", log_snr=(0.0, 1.3), out=tmp_path / "s.zarr")
    assert timesteps_at_log_snr(cfg).ts == (150, 258)
    both = from_flat(ExtractConfig, model="tiny", ts=(10,), log_snr=(0.0,), out=tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="not both"):
        timesteps_at_log_snr(both)


def test_the_schedule_command_prints_the_table_and_refuses_encoders(capsys):
    with pytest.raises(SystemExit) as done:
        main(["schedule", "--model", "demo-fmnist", "-t", "0,150", "--log-snr", "0"])
    out = capsys.readouterr().out
    assert done.value.code in (0, None)
    assert "ADM linear (1000 steps)" in out and "log-SNR" in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["0", "150", "258"]
    with pytest.raises(SystemExit) as done:
        main(["schedule", "--model", "tiny-sd", "--log-snr", "20"])
    err = capsys.readouterr().err
    assert done.value.code != 0 and "outside tiny-sd schedule's range" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_store_key_records_each_timesteps_noise_level(tmp_path):
    from extract.store.schema import FeatureStore

    out = tmp_path / "s.zarr"
    args = ["run", "--model", "tiny", "--random-init", "--data", "digits", "--limit", "8", "-b", "3"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--pool", "1", "--log-snr", "0,1.3", "--out", str(out), "--no-progress"])
    assert done.value.code in (0, None)
    key = FeatureStore.open(out).attrs["key"]
    assert key["ts"] == [150, 258] and "log_snr" not in key
    level = key["noise_levels"]["258"]
    assert level["log_snr"] == pytest.approx(adm_schedule("linear", 1000).log_snr[258])
    assert level["abar"] == pytest.approx(level["alpha"] ** 2) and level["model_t"] == 258
