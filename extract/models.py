"""Build preset U-Nets, load published checkpoints safely, make fair random controls."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from extract import gd
from extract.presets import PRESETS, ModelPreset


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used with the requested preset."""


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


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def shipped_weights(preset: ModelPreset) -> Path:
    """The weights file the repository ships for a preset (the demo model)."""
    path = WEIGHTS_DIR / f"{preset.name}.pt"
    if not preset.shipped or not path.is_file():
        raise FileNotFoundError(f"model {preset.name!r} has no shipped weights; pass --ckpt FILE or --random-init")
    return path


def file_sha256(path: str | Path, block: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain state_dict file with weights-only unpickling (never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only torch checkpoint ({first})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class FitReport:
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple, tuple], ...]  # key, checkpoint shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 5) -> str:
        def head(items):
            shown = ", ".join(items[:limit])
            return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys: {head(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys: {head(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} {tuple(c)} in file vs {tuple(m)} in model" for k, c, m in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatches: {head(shapes)}")
        return "; ".join(parts)


def shapes_of(preset: ModelPreset) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a preset, computed on the meta device."""
    return {k: tuple(v.shape) for k, v in build_unet(preset, "meta").state_dict().items()}


def fit_of(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> FitReport:
    """Compare a file's parameter shapes (name -> shape) with a model's."""
    return FitReport(
        missing=tuple(k for k in expected if k not in found),
        unexpected=tuple(k for k in found if k not in expected),
        mismatched=tuple((k, tuple(found[k]), tuple(expected[k])) for k in expected if k in found and tuple(found[k]) != tuple(expected[k])),
    )


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
