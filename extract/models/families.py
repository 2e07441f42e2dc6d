"""The model-family registry: every kind of network (or none) that writes a feature store.

A family is one module and one row here. The row names, as "module:attribute" (imported only
when used, so the ADM path never imports diffusers and a pixel store never imports a U-Net):
- `config`: the frozen config its run takes (built from flat option names);
- `run`: config -> summary; writes (or resumes) the store through the one writer;
- `validate`: config -> every argument error before any work (diffusion families);
- `block_table`: preset -> its b -> module table (diffusion families);
- `kinds`: the provenance kinds of the stores it writes, which `verify --repair` reads back;
- `preset`: (model, model_dir) -> its preset, for families whose models are read from a folder.
Diffusion presets belong to the family of the preset registry that defines them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from extract.models.adm_presets import MODEL_NAMES, PRESETS
from extract.models.diffusers_spec import DIFFUSERS_MODELS
from extract.models.latent_presets import LATENT_PRESETS


@dataclass(frozen=True)
class Family:
    config: str
    run: str
    kinds: tuple[str, ...]
    validate: str | None = None
    block_table: str | None = None
    preset: str | None = None

    def part(self, name: str):
        """The named part, imported now."""
        where = getattr(self, name)
        if where is None:
            raise ValueError(f"this family has no {name.replace('_', ' ')}")
        module, _, attribute = where.partition(":")
        return getattr(importlib.import_module(module), attribute)


DIFFUSION_CONFIG = "extract.store.config:ExtractConfig"
FAMILIES: dict[str, Family] = {
    "adm": Family(
        DIFFUSION_CONFIG,
        "extract.models.adm_run:extract_adm",
        ("unet",),
        "extract.models.adm_run:validate_adm",
        "extract.models.adm_blocks:block_table",
    ),
    "latent": Family(
        DIFFUSION_CONFIG,
        "extract.models.latent_run:extract_latent",
        ("latent",),
        "extract.models.latent_run:validate_latent",
        "extract.models.latent_blocks:latent_block_table",
    ),
    "diffusers": Family(
        DIFFUSION_CONFIG,
        "extract.models.diffusers_run:extract_diffusers",
        ("diffusers",),
        "extract.models.diffusers_run:validate_diffusers",
        "extract.models.diffusers_run:block_table",
        "extract.models.diffusers_spec:resolve_spec",
    ),
    "backbone": Family(
        "extract.models.backbones:BackboneConfig", "extract.models.backbones:extract_backbone", ("backbone",)
    ),
    "pixels": Family(
        "extract.models.pixels:PixelConfig", "extract.models.pixels:extract_pixels", ("pixels",)
    ),
    "features": Family(
        "extract.models.feature_store:FeatureStoreConfig",
        "extract.models.feature_store:extract_features",
        ("features",),
    ),
    # networks read layer by layer from a weights file (the BiGAN encoder, the Fashion-MNIST classifier): one row each in extract.models.staged
    "staged": Family(
        "extract.models.staged:StagedConfig",
        "extract.models.staged:extract_staged",
        ("bigan", "classifier-layers"),
    ),
}
PRESET_FAMILY = {
    **{name: "adm" for name in PRESETS},
    **{name: "latent" for name in LATENT_PRESETS},
    **{name: "diffusers" for name in DIFFUSERS_MODELS},
}


def family_of(model: str) -> str:
    """The family of a diffusion preset's name; an unknown name lists the known ones."""
    try:
        return PRESET_FAMILY[model]
    except KeyError:
        raise ValueError(
            f"unknown model preset {model!r}; choose one of: {', '.join((*MODEL_NAMES, *DIFFUSERS_MODELS))}"
        ) from None


def family_functions(model: str):
    """(validate, run) of a diffusion preset's family."""
    family = FAMILIES[family_of(model)]
    return family.part("validate"), family.part("run")


def block_table(model: str, model_dir=None):
    """The preset's block table (rows: b, module, layers, channels, height, width, numel);
    `model_dir`: the folder of a model read from one (--model diffusers)."""
    from extract.models.adm_presets import get_any_preset

    family = FAMILIES[family_of(model)]
    preset = family.part("preset")(model, model_dir) if family.preset else get_any_preset(model)
    return family.part("block_table")(preset)


def family_of_kind(kind: str) -> Family | None:
    """The family that writes stores of this provenance kind, or None."""
    return next((f for f in FAMILIES.values() if kind in f.kinds), None)
