"""Forward-process noising with noise that depends only on (seed, image, t, view).

Each image's eps comes from its own generator, seeded from a hash of
(seed, dataset index, t, view), so a row's features do not depend on the batch it
was computed in, the worker or process that loaded it, or where a run resumed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

from extract import gd
from extract.presets import ModelPreset


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
