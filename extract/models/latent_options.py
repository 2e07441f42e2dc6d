"""The latent family's own options: SD U-Nets and DiT through diffusers (extract.models.latent_presets),
read from a local model folder, with their conditioning and their latent cache. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from extract.models.latent_presets import LATENT_PRESETS, LatentPreset
from extract.store.config import option


@dataclass(frozen=True)
class LatentOptions:
    prompt: str = option("", "SD: the prompt every image is paired with (encoded once per run)")
    model_dir: Path | None = option(
        None,
        "a local diffusers model folder (unet/ or transformer/, vae/, text_encoder/, tokenizer/, scheduler/)",
    )
    latents: Path | None = option(
        None,
        "the VAE latent cache store, shared by runs on the same images "
        "[default: latents/<model>-<hash>.zarr beside --out]; a folder or a URL",
        store=True,
    )
    class_label: int | None = option(
        None, "DiT: the class label every image is given [default: 1000, the null class]"
    )


def latent_preset(model: str, options: LatentOptions) -> LatentPreset:
    return LATENT_PRESETS[model]
