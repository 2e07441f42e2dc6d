"""The ADM (guided-diffusion) family's forward: load weights, noise, run to block b, pool.

`compute_features` turns one loader batch into pooled features for every requested key; it
serves every diffusion family through the `noised` / `capture` pair of the model object it
is given (AdmForward here, extract.models.latent_run.LatentForward for SD and DiT)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from extract.models import adm_blocks as blocks_mod
from extract.models.adm_presets import ModelPreset
from extract.models.noise import draw_noise, q_sample
from extract.models.pooling import pool
from extract.models.precision import AUTOCAST_DTYPES
from extract.store.config import ExtractConfig
from extract.store.schema import COMPATIBLE_FIELDS, FeatureKey


@dataclass
class AdmForward:
    """How a guided-diffusion U-Net is noised into and read out; latent families have their own
    (extract.models.latent_run.LatentForward), so the shard loop serves every family."""

    model: torch.nn.Module
    preset: ModelPreset
    label: int | None  # the class label of class-conditional models, else None

    def noised(self, x0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        return q_sample(self.preset, x0, t, eps)

    def capture(self, x_t: torch.Tensor, steps: torch.Tensor, blocks) -> dict[int, torch.Tensor]:
        y = (
            None
            if self.label is None
            else torch.full((x_t.shape[0],), self.label, dtype=torch.long, device=x_t.device)
        )
        if (
            self.preset.rescale_timesteps
        ):  # the U-Net was trained on t * 1000 / steps (improved-diffusion's rescale_timesteps)
            steps = steps.float() * (1000.0 / self.preset.diffusion_steps)
        return blocks_mod.capture(self.model, x_t, steps, blocks, y=y)


def compute_features(
    model,
    preset: ModelPreset,
    x0: torch.Tensor,
    indices: list[int],
    cfg: ExtractConfig,
    blocks,
    shapes,
    device,
) -> dict[FeatureKey, np.ndarray]:
    """One loader batch: x0 (N, C, S, S), or (N, V, C, S, S) with --aug, in [-1, 1] -> key -> (N, [V,] C, h, w) in the store dtype.

    The model always sees exactly cfg.micro_batch images (the last group zero-padded):
    CPU and GPU kernels pick their blocking, and so their rounding, by shape, so a fixed
    shape is what makes a row's bits independent of how the run was batched."""
    g = cfg.micro_batch
    n = x0.shape[0]
    out = {k: np.empty((n, cfg.views, *s), dtype=np.dtype(cfg.store_dtype)) for k, s in shapes.items()}
    for start in range(0, n, g):
        rows = slice(start, min(start + g, n))
        x = x0[rows]
        if x.shape[0] < g:
            x = torch.cat([x, x.new_zeros((g - x.shape[0], *x.shape[1:]))])
        for key, values in _forward_group(
            model, preset, x, indices[rows], cfg, blocks, shapes.keys(), device
        ).items():
            out[key][rows] = values[: rows.stop - rows.start]
    return {k: (a if cfg.views > 1 else a[:, 0]) for k, a in out.items()}


def _forward_group(
    model, preset, x0: torch.Tensor, indices: list[int], cfg, blocks, keys, device
) -> dict[FeatureKey, np.ndarray]:
    """x0 (G, [V,] C, S, S), the first len(indices) rows real -> key -> (G, V, C, h, w), for the given keys.
    `model` noises and reads out (AdmForward, LatentForward); x0 is what it noises (pixels, latents)."""
    g = x0.shape[0]
    autocast = AUTOCAST_DTYPES[cfg.dtype]
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
    out: dict[FeatureKey, list] = {}
    wanted = {
        (t, b): [k for k in keys if (k.t, k.b) == (t, b)] for t in cfg.ts for b in blocks
    }  # each block's pools, resolved
    for t in cfg.ts:
        steps = torch.full((g,), t, dtype=torch.long, device=device)
        for v in range(cfg.views):
            image_shape = tuple(x0.shape[-3:])
            eps = torch.zeros((g, *image_shape))
            eps[: len(indices)] = draw_noise(image_shape, cfg.seed, indices, t, v)
            x_view = x0[:, v] if x0.dim() == 5 else x0  # augmented: each view its own crop
            x_t = model.noised(x_view, t, eps.to(device, non_blocking=True))
            with torch.inference_mode(), amp:
                feats = model.capture(x_t, steps, blocks)
            for b in blocks:
                h = feats[b].float()
                for key in wanted[(t, b)]:
                    out.setdefault(key, []).append(pool(h, key.pool).cpu().numpy().astype(cfg.store_dtype))
    return {k: np.stack(v, axis=1) for k, v in out.items()}


# the key fields that define what a U-Net store's features mean (stores probed together agree on them)
UNET_COMPATIBLE = COMPATIBLE_FIELDS
