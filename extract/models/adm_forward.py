"""The ADM (guided-diffusion) family's `Forward` (extract.shards.Forward): how its U-Net is
noised into and read out to block b; the shard loop's `compute_features` does the rest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from extract.models import adm_blocks as blocks_mod
from extract.models.adm_presets import ModelPreset
from extract.models.noise import q_sample
from extract.store.schema import COMPATIBLE_FIELDS


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
        if self.preset.rescale_timesteps:
            # the U-Net was trained on t * 1000 / steps (improved-diffusion's rescale_timesteps)
            steps = steps.float() * (1000.0 / self.preset.diffusion_steps)
        return blocks_mod.capture(self.model, x_t, steps, blocks, y=y)


# the key fields that define what a U-Net store's features mean (stores probed together agree on them)
UNET_COMPATIBLE = COMPATIBLE_FIELDS
