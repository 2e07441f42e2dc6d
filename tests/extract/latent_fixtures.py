"""Tiny diffusers model folders in the hub's layout, written to tmp_path (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from extract.models.latent import FAMILIES, build_denoiser, build_text_encoder, build_vae, libraries
from extract.models.latent_presets import LatentPreset

TOKENS = ["!", "<|startoftext|>", "<|endoftext|>", "a", "b</w>", "ab</w>", "c</w>"]


def write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer with a seven-token vocabulary (ids match tiny-sd's text config: bos 1, eos 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TOKENS)}))
    (folder / "merges.txt").write_text("#version: 0.2\na b</w>\n")
    tokenizer = libraries().transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )
    tokenizer.save_pretrained(str(folder))


def write_model_folder(
    preset: LatentPreset, folder: Path, seed: int = 0, scheduler: dict | None = None
) -> Path:
    """A diffusers model folder for a tiny preset: random weights (seeded), safetensors files."""
    torch.manual_seed(seed)
    fam = FAMILIES[preset.family]
    build_denoiser(preset).save_pretrained(folder / fam.denoiser_folder, safe_serialization=True)
    build_vae(preset).save_pretrained(folder / "vae", safe_serialization=True)
    if preset.family == "sd":
        build_text_encoder(preset).save_pretrained(folder / "text_encoder", safe_serialization=True)
        write_tokenizer(folder / "tokenizer")
    sched = scheduler or {
        "_class_name": "DDIMScheduler",
        "beta_schedule": preset.beta_schedule,
        "beta_start": preset.beta_start,
        "beta_end": preset.beta_end,
        "num_train_timesteps": preset.diffusion_steps,
    }
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    return folder
