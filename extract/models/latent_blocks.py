"""Block tables and early-exit capture for latent diffusion denoisers (SD U-Nets, DiT).

The numbering is the preset's (`LatentPreset.block_names`, computed from its config); here it
meets the modules: forward hooks on diffusers' own modules, the model's own forward, stopped
by extract.models.adm_blocks.hooked_forward right after the deepest requested block. Every block's
output becomes a (N, C, H, W) map: SD outputs are maps already (the first element where a
block returns a tuple), DiT tokens are laid out on their patch grid.
"""

from __future__ import annotations

import torch
from torch import nn

from extract.models.adm_blocks import BlockInfo, hooked_forward
from extract.models.latent import FAMILIES, build_denoiser
from extract.models.latent_presets import LatentPreset


def latent_blocks(model: nn.Module, preset: LatentPreset) -> dict[int, tuple[str, nn.Module]]:
    """b -> (module path, module), b = 1..B."""
    return {b: (name, model.get_submodule(name)) for b, name in enumerate(preset.block_names, start=1)}


def capture_latent(
    model: nn.Module,
    preset: LatentPreset,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    blocks,
    stop_early: bool = True,
) -> dict[int, torch.Tensor]:
    """Block outputs for latents x_t (N, C, h, w) at timesteps t (N,) with conditioning cond
    (N, L, D) text states or (N,) class labels. Returns b -> (N, C_b, H_b, W_b)."""
    fam = FAMILIES[preset.family]
    modules = {b: module for b, (_, module) in latent_blocks(model, preset).items()}
    return hooked_forward(modules, blocks, lambda: fam.call(model, x_t, t, cond), fam.convert, stop_early)


def meta_inputs(
    preset: LatentPreset, batch: int = 1, device: str | torch.device = "meta"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t (N, C, h, w), t (N,), cond) of the preset's shapes; empty on the meta device."""
    s = preset.latent_size
    x = torch.empty(batch, preset.denoiser["in_channels"], s, s, device=device)
    t = torch.zeros(batch, dtype=torch.long, device=device)
    return x, t, FAMILIES[preset.family].meta_condition(preset, batch, device)


def latent_block_table(preset: LatentPreset) -> list[BlockInfo]:
    """Every block's module and output map shape, from a forward on the meta device (no weights)."""
    model = build_denoiser(preset, "meta")
    table = latent_blocks(model, preset)
    feats = capture_latent(model, preset, *meta_inputs(preset), list(table), stop_early=False)
    return [
        BlockInfo(b, name, type(module).__name__, *feats[b].shape[1:]) for b, (name, module) in table.items()
    ]
