"""Weights of latent diffusion models in local files, as diffusers lays them out: a component
folder's weights (one .safetensors, a sharded index, an fp16 variant or a .bin), their parameter
shapes read without loading a tensor, their hashes, and a component loaded from its folder.
Nothing is fetched: every load passes local_files_only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from extract.models.weights import CheckpointError, file_sha256, read_state_dict

WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")


@dataclass(frozen=True)
class WeightFiles:
    """The weights of one component folder: the files to read and hash, and how diffusers finds them."""

    files: tuple[Path, ...]
    variant: str | None = None
    safetensors: bool = True


def find_weights(folder: Path) -> WeightFiles:
    """A component folder's weights: one .safetensors file, a sharded index, an fp16 variant, or a .bin."""
    for name in WEIGHT_NAMES:
        if (folder / f"{name}.safetensors").is_file():
            return WeightFiles((folder / f"{name}.safetensors",))
        index = folder / f"{name}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return WeightFiles((index, *(folder / s for s in shards)))
        if (folder / f"{name}.fp16.safetensors").is_file():
            return WeightFiles((folder / f"{name}.fp16.safetensors",), variant="fp16")
    for name in WEIGHT_NAMES:
        if (folder / f"{name}.bin").is_file():
            # diffusers loads it weights-only
            return WeightFiles((folder / f"{name}.bin",), safetensors=False)
    raise FileNotFoundError(
        f"{folder}: no weights file ({', '.join(n + '.safetensors' for n in WEIGHT_NAMES[:2])} "
        "or a sharded index)"
    )


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of a weights file, read from the safetensors header (no tensor
    is loaded) or by weights-only unpickling."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one clear error
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: not a readable safetensors file ({first})") from None
    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


def weights_shapes(weights: WeightFiles) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for f in weights.files:
        if not f.name.endswith(".index.json"):
            shapes.update(file_shapes(f))
    return shapes


# wrappers some training code saves around the denoiser
PREFIXES = ("unet.", "model.", "module.", "transformer.")


def strip_prefix(names) -> str:
    """The wrapper prefix every parameter name shares (e.g. 'unet.'), or ''."""
    names = list(names)
    return next((p for p in PREFIXES if names and all(n.startswith(p) for n in names)), "")


def file_hashes(files) -> dict[str, str]:
    return {f"{f.parent.name}/{f.name}": file_sha256(f) for f in files}


def from_folder(cls, folder: Path, sub: str) -> tuple[nn.Module, dict]:
    """from_pretrained on a local component folder; incomplete weights are an error, not a random init."""
    weights = find_weights(folder / sub)
    model, info = cls.from_pretrained(
        folder,
        subfolder=sub,
        local_files_only=True,
        variant=weights.variant,
        use_safetensors=weights.safetensors,
        output_loading_info=True,
    )
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    wrong = list(info.get("mismatched_keys", []))
    if missing or wrong:
        raise CheckpointError(
            f"{folder}/{sub}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(wrong)} shape mismatches {wrong[:5]}"
        )
    return model.float().eval(), file_hashes((folder / sub / "config.json", *weights.files))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict file: safetensors, or weights-only torch."""
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return read_state_dict(path)
