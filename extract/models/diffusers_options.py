"""The diffusers family's own options: any denoiser in a local diffusers folder
(`--model diffusers --model-dir DIR`) and the `sdxl` preset (extract.models.diffusers_spec).
Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from extract.models.diffusers_spec import DiffusersSpec, resolve_spec
from extract.store.config import option


@dataclass(frozen=True)
class DiffusersOptions:
    model_dir: Path | None = option(
        None,
        "the local diffusers folder: unet/ or transformer/, vae/ (none: pixel space), scheduler/, "
        "text encoders",
        network=True,
    )
    prompt: str = option("", "the prompt every image is paired with (encoded once per run)")
    cond: Path | None = option(
        None,
        "a safetensors file of the text conditioning (prompt_embeds, pooled_prompt_embeds), for models "
        "whose text encoders are absent or huge (SD3); in the key by its hash",
    )
    latents: Path | None = option(
        None,
        "the VAE latent cache store, shared by runs on the same images "
        "[default: latents/<model>-<hash>.zarr beside --out]",
    )
    class_label: int | None = option(
        None, "the label of class-conditional denoisers [default: the config's null class]"
    )


def diffusers_spec(model: str, options: DiffusersOptions) -> DiffusersSpec:
    return resolve_spec(model, options.model_dir)
