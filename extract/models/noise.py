"""Forward-process noising with noise that depends only on (seed, image, t, view).

Each image's eps comes from its own generator, seeded from a hash of
(seed, dataset index, t, view), so a row's features do not depend on the batch it
was computed in, the worker or process that loaded it, or where a run resumed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

from extract.models import gd
from extract.models.adm_presets import ModelPreset


def noise_seed(seed: int, index: int, t: int, view: int) -> int:
    digest = hashlib.blake2b(f"diffprobe-eps:{seed}:{index}:{t}:{view}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def draw_noise(shape: tuple[int, ...], seed: int, indices: list[int], t: int, view: int) -> torch.Tensor:
    """Standard normal eps of shape (len(indices), *shape), float32 on the CPU."""
    out = torch.empty((len(indices), *shape), dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    for row, index in enumerate(indices):
        gen.manual_seed(noise_seed(seed, int(index), t, view))
        out[row] = torch.randn(shape, generator=gen, dtype=torch.float32)
    return out


@lru_cache(maxsize=None)
def diffusion_for(preset: ModelPreset):
    """guided-diffusion's GaussianDiffusion with the preset's schedule (all steps, no respacing)."""
    return gd.create_gaussian_diffusion(
        steps=preset.diffusion_steps, learn_sigma=preset.learn_sigma, noise_schedule=preset.noise_schedule
    )


def q_sample(preset: ModelPreset, x0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, by guided-diffusion's q_sample. x0, eps: (N, C, H, W)."""
    steps = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
    return diffusion_for(preset).q_sample(x0, steps, noise=eps)


# ---------------------------------------------------------------- latent diffusion schedules
# betas as diffusers' schedulers compute them (float32 throughout), so that alphas_cumprod and
# x_t equal those of the scheduler the model was trained and published with
BETA_SCHEDULES = {
    "linear": lambda start, end, steps: torch.linspace(start, end, steps, dtype=torch.float32),
    "scaled_linear": lambda start, end, steps: (
        torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float32) ** 2
    ),
}


def alphas_cumprod(
    beta_schedule: str, beta_start: float, beta_end: float, steps: int, trained_betas=None
) -> torch.Tensor:
    """abar_t for t = 0..steps-1, (steps,) float32."""
    if trained_betas is not None:
        betas = torch.tensor(trained_betas, dtype=torch.float32)
    else:
        try:
            betas = BETA_SCHEDULES[beta_schedule](beta_start, beta_end, steps)
        except KeyError:
            raise ValueError(
                f"beta schedule {beta_schedule!r} is not supported; "
                f"choose one of: {', '.join(BETA_SCHEDULES)}"
            ) from None
    return torch.cumprod(1.0 - betas, dim=0)


def latent_q_sample(abar: torch.Tensor, z0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps in float32, as diffusers' add_noise.
    z0, eps: (N, C, h, w)."""
    a = abar[t].to(z0.device)
    return a**0.5 * z0 + (1 - a) ** 0.5 * eps
