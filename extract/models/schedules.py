"""Noise levels: what a timestep t means in each model's own schedule (numpy only).

Every diffusion family noises an image as x_t = alpha_t x0 + sigma_t eps:
- DDPM-style schedules (ADM's linear and cosine, SD's scaled linear, DiT's linear, any folder's
  betas): alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), abar_t = prod_{s <= t} (1 - beta_s);
- flow matching (SD3's scheduler): x_t = (1 - s) x0 + s eps with s = t / steps, so alpha_t = 1 - s
  and sigma_t = s (the timestep already holds the scheduler's shift).
The log signal-to-noise ratio, log(alpha_t^2 / sigma_t^2), is the coordinate on which two models
can be compared: the same scheduler t means different noise in different schedules. `abar`
reports alpha^2 / (alpha^2 + sigma^2), abar_t itself for DDPM schedules and its variance-preserving
equivalent for flow matching (the same log-SNR).

ADM's betas follow guided-diffusion's `get_named_beta_schedule` (float64); the other DDPM
schedules follow diffusers' schedulers (float32 betas and cumulative product).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseSchedule:
    """alpha_t and sigma_t for t = 0 .. steps - 1; the network is fed t * input_scale."""

    name: str
    alpha: np.ndarray  # (steps,) float64
    sigma: np.ndarray  # (steps,) float64
    input_scale: float = 1.0

    @property
    def steps(self) -> int:
        return len(self.alpha)

    @property
    def log_snr(self) -> np.ndarray:
        """(steps,) log(alpha^2 / sigma^2); +inf where sigma is 0, -inf where alpha is 0."""
        with np.errstate(divide="ignore"):
            return 2 * (np.log(self.alpha) - np.log(self.sigma))

    def check(self, t: int) -> None:
        if not 0 <= t < self.steps:
            raise ValueError(f"timestep {t} is outside [0, {self.steps}) of {self.name}")

    def level(self, t: int) -> dict:
        """The noise level at t, as a store key records it (an infinite log-SNR as null)."""
        self.check(t)
        a, s, lam = float(self.alpha[t]), float(self.sigma[t]), float(self.log_snr[t])
        return {
            "model_t": t * self.input_scale,
            "alpha": a,
            "sigma": s,
            "abar": a * a / (a * a + s * s),
            "log_snr": lam if math.isfinite(lam) else None,
        }

    def levels(self, ts) -> dict[str, dict]:
        """{str(t): level} for every t (string keys: they read back alike from JSON attrs)."""
        return {str(int(t)): self.level(int(t)) for t in ts}

    def nearest_t(self, log_snr: float) -> int:
        """The t whose log-SNR is nearest the one asked for; a value outside the schedule's
        range names the range."""
        lam = self.log_snr
        finite = lam[np.isfinite(lam)]
        lo, hi = float(finite.min()), float(finite.max())
        if not lo <= log_snr <= hi:
            raise ValueError(
                f"log-SNR {log_snr:g} is outside {self.name}'s range [{lo:.3f}, {hi:.3f}] "
                f"(t = 0 .. {self.steps - 1})"
            )
        return int(np.argmin(np.where(np.isfinite(lam), np.abs(lam - log_snr), np.inf)))


def variance_preserving(name: str, abar: np.ndarray, input_scale: float = 1.0) -> NoiseSchedule:
    abar = np.asarray(abar, np.float64)
    return NoiseSchedule(name, np.sqrt(abar), np.sqrt(1.0 - abar), input_scale)


def adm_betas(kind: str, steps: int) -> np.ndarray:
    """guided-diffusion's named schedules: 'linear' (scaled so any number of steps spans the same
    noise as 1000) and 'cosine' (Nichol and Dhariwal's, betas capped at 0.999)."""
    if kind == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    if kind == "cosine":

        def f(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)])
    raise ValueError(f"noise schedule {kind!r} is not supported; choose one of: linear, cosine")


def adm_schedule(noise_schedule: str, steps: int, rescale_timesteps: bool = False) -> NoiseSchedule:
    """An ADM preset's schedule; improved-diffusion's rescale_timesteps feeds t * 1000 / steps."""
    abar = np.cumprod(1.0 - adm_betas(noise_schedule, steps))
    scale = 1000 / steps if rescale_timesteps else 1.0
    return variance_preserving(f"ADM {noise_schedule} ({steps} steps)", abar, scale)


def adm_preset_schedule(preset, options=None) -> NoiseSchedule:
    """An ADM preset's (`ModelPreset`) schedule; its options change nothing here."""
    return adm_schedule(preset.noise_schedule, preset.diffusion_steps, preset.rescale_timesteps)


def diffusers_betas(beta_schedule: str, start: float, end: float, steps: int) -> np.ndarray:
    """diffusers' DDPM-family betas, in float32 as its schedulers compute them."""
    if beta_schedule == "linear":
        return np.linspace(start, end, steps, dtype=np.float32)
    if beta_schedule == "scaled_linear":
        return np.linspace(start**0.5, end**0.5, steps, dtype=np.float32) ** 2
    raise ValueError(
        f"beta schedule {beta_schedule!r} is not supported; choose one of: linear, scaled_linear"
    )


def schedule_from_record(record: dict, name: str = "") -> NoiseSchedule:
    """The schedule a latent or diffusers model's store key records (`kind` ddpm or flow;
    beta_schedule, beta_start, beta_end, steps, trained_betas)."""
    steps = int(record["steps"])
    if record.get("kind") == "flow":
        s = np.arange(steps, dtype=np.float64) / steps
        return NoiseSchedule(name or f"flow matching ({steps} steps)", 1.0 - s, s)
    if record.get("trained_betas") is not None:
        betas = np.asarray(record["trained_betas"], np.float32)
    else:
        betas = diffusers_betas(record["beta_schedule"], record["beta_start"], record["beta_end"], steps)
    abar = np.cumprod((1.0 - betas).astype(np.float32), dtype=np.float32)
    label = name or f"{record.get('beta_schedule', 'trained')} betas ({steps} steps)"
    return variance_preserving(label, abar.astype(np.float64))


def ts_for_log_snr(schedule: NoiseSchedule, values) -> tuple[int, ...]:
    """The timesteps nearest each log-SNR asked for, sorted, repeats dropped."""
    return tuple(sorted({schedule.nearest_t(float(v)) for v in values}))


def format_table(schedule: NoiseSchedule, ts) -> str:
    """The schedule at the given t, one row each: t, the network's input t, alpha, sigma, abar, log-SNR."""
    lines = [
        f"{schedule.name}",
        f"{'t':>5} {'model t':>9} {'alpha':>9} {'sigma':>9} {'abar':>10} {'log-SNR':>9}",
    ]
    for t in ts:
        lv = schedule.level(int(t))
        lam = "inf" if lv["log_snr"] is None else f"{lv['log_snr']:.3f}"
        cells = f"{lv['alpha']:>9.5f} {lv['sigma']:>9.5f} {lv['abar']:>10.6f}"
        lines.append(f"{int(t):>5} {lv['model_t']:>9.2f} {cells} {lam:>9}")
    return "\n".join(lines)
