"""Build preset U-Nets, load published checkpoints safely, make fair random controls."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from extract.models import gd
from extract.models.adm_presets import PRESETS, ModelPreset
from extract.models.weights import CheckpointError, FitReport, fit_of, read_state_dict, weights_record


def build_unet(preset: ModelPreset, device: str | torch.device = "cpu") -> gd.UNetModel:
    """The preset's UNetModel with guided-diffusion's own initialisation, in eval mode.

    On the `meta` device no memory is allocated: shapes and block tables only.
    """
    with torch.device(device):
        model = gd.UNetModel(**preset.unet_kwargs())
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reinit_zeroed_layers(model: gd.UNetModel) -> int:
    """Give the layers guided-diffusion zero-initialises a standard (PyTorch default) init.

    guided-diffusion zeroes the last conv of every ResBlock, every attention output
    projection and the output conv, so a freshly built U-Net passes its input through
    each block almost unchanged. A random-weight control built that way would be a
    straw man; re-initialised, every block computes a real random function.
    Returns the number of layers re-initialised.
    """
    layers = [m.out_layers[-1] for m in model.modules() if isinstance(m, gd.ResBlock)]
    layers += [m.proj_out for m in model.modules() if isinstance(m, gd.AttentionBlock)]
    layers.append(model.out[-1])
    for layer in layers:
        layer.reset_parameters()
    return len(layers)


def random_unet(preset: ModelPreset, seed: int) -> gd.UNetModel:
    """A random-weight control: guided-diffusion's init with zeroed layers re-initialised.

    Built on the CPU under a fixed seed, so it is the same model on every device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_unet(preset, "cpu")
        reinit_zeroed_layers(model)
    return model


WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # extract/weights


def shipped_weights(preset: ModelPreset) -> Path:
    """The weights file the repository ships for a preset (the demo model)."""
    path = WEIGHTS_DIR / f"{preset.name}.pt"
    if not preset.shipped or not path.is_file():
        raise FileNotFoundError(
            f"model {preset.name!r} has no shipped weights; pass --ckpt FILE or --random-init"
        )
    return path


def shapes_of(preset: ModelPreset) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a preset, computed on the meta device."""
    return {k: tuple(v.shape) for k, v in build_unet(preset, "meta").state_dict().items()}


def check_fit(state: dict[str, torch.Tensor], preset: ModelPreset) -> FitReport:
    return fit_of({k: tuple(v.shape) for k, v in state.items()}, shapes_of(preset))


def presets_that_fit(state: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, p in PRESETS.items() if check_fit(state, p).ok]


def load_checkpoint(preset: ModelPreset, path: str | Path) -> gd.UNetModel:
    """The preset's U-Net with weights from a plain state_dict file.

    Raises CheckpointError naming missing/unexpected keys and shape mismatches, and the
    presets that would fit, before any weights are copied.
    """
    state = read_state_dict(path)
    report = check_fit(state, preset)
    if not report.ok:
        fits = presets_that_fit(state)
        hint = f"; presets that fit this file: {', '.join(fits)}" if fits else "; no preset fits this file"
        raise CheckpointError(f"{path} does not fit preset {preset.name!r}: {report.describe()}{hint}")
    model = build_unet(preset, "meta")
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().eval()


def load_unet(
    preset: ModelPreset, ckpt: str | Path | None = None, *, random_init: bool = False, seed: int = 0
) -> tuple[gd.UNetModel, dict]:
    """The one way a preset's U-Net gets its weights: a checkpoint file, the preset's shipped
    file, or a seeded random init; with the weights record (`weights_record`). Extraction,
    sampling and fine-tuning all load through here."""
    if random_init:
        return random_unet(preset, seed), weights_record(None, random_init=True, seed=seed)
    path = Path(ckpt) if ckpt is not None else shipped_weights(preset)
    model = load_checkpoint(preset, path)  # first: a missing or unfit file is refused with its reasons
    return model, weights_record(path)
