"""Block numbering and early-exit capture for guided-diffusion U-Nets.

Blocks are numbered 1..2L+1 as the paper's released code does: the L input blocks,
then the middle block (L+1), then the L output blocks. The activation of block b is
the output of that module in UNetModel.forward. Capture uses forward hooks on
guided-diffusion's own modules and the model's own forward, so any fork with the same
module tree works; the forward is stopped right after the deepest requested block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from extract.models import gd
from extract.models.adm import build_unet
from extract.models.adm_presets import ModelPreset


def unet_blocks(model: gd.UNetModel) -> dict[int, tuple[str, nn.Module]]:
    """b -> (module path, module), b = 1..2L+1."""
    named = [(f"input_blocks.{i}", m) for i, m in enumerate(model.input_blocks)]
    named.append(("middle_block", model.middle_block))
    named += [(f"output_blocks.{i}", m) for i, m in enumerate(model.output_blocks)]
    return {b: nm for b, nm in enumerate(named, start=1)}


class _StopForward(Exception):
    """Raised by the hook of the deepest requested block to end the forward there."""


def hooked_forward(
    modules: dict[int, nn.Module],
    blocks,
    forward: Callable[[], object],
    convert: Callable[[object], torch.Tensor] = lambda output: output,
    stop_early: bool = True,
) -> dict[int, torch.Tensor]:
    """Run `forward()` with hooks on modules[b] for the requested blocks; b -> convert(output of b).

    Block numbers must follow the order in which the blocks' outputs are produced, so that
    with stop_early the hook of the deepest requested block ends the forward by raising, and
    no later layer runs. Any model family uses this: only `modules` and `convert` differ.
    """
    wanted = sorted(set(blocks))
    unknown = [b for b in wanted if b not in modules]
    if unknown:
        raise ValueError(f"block {unknown[0]} is outside 1..{len(modules)}")
    deepest = wanted[-1]
    out: dict[int, torch.Tensor] = {}

    def hook_for(b: int):
        def hook(_module, _inputs, output):
            out[b] = convert(output)
            if stop_early and b == deepest:
                raise _StopForward

        return hook

    handles = [modules[b].register_forward_hook(hook_for(b)) for b in wanted]
    try:
        forward()
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


def capture(
    model: gd.UNetModel,
    x: torch.Tensor,
    t: torch.Tensor,
    blocks: set[int] | list[int],
    y: torch.Tensor | None = None,
    stop_early: bool = True,
) -> dict[int, torch.Tensor]:
    """Activations of the requested blocks for inputs x (N, C, H, W) at timesteps t (N,).

    Returns b -> (N, C_b, H_b, W_b). With stop_early, no block after max(blocks) runs.
    """
    modules = {b: module for b, (_, module) in unet_blocks(model).items()}
    return hooked_forward(modules, blocks, lambda: model(x, t, y=y), stop_early=stop_early)


def block_layers(module: nn.Module) -> str:
    """A short description of what a block holds, e.g. 'ResBlock+AttentionBlock'."""
    kinds = [type(m).__name__ for m in module.children()] if isinstance(module, nn.Sequential) else []
    return "+".join(kinds) or type(module).__name__


@dataclass(frozen=True)
class BlockInfo:
    b: int
    module: str
    layers: str
    channels: int
    height: int
    width: int

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width


def block_table(preset: ModelPreset) -> list[BlockInfo]:
    """Every block's module and output shape, from a forward on the meta device (no weights)."""
    model = build_unet(preset, "meta")
    s = preset.image_size
    x = torch.empty(1, preset.in_channels, s, s, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta") if preset.class_cond else None
    table = unet_blocks(model)
    feats = capture(model, x, t, list(table), y=y, stop_early=False)
    return [
        BlockInfo(b, name, block_layers(module), *feats[b].shape[1:]) for b, (name, module) in table.items()
    ]
