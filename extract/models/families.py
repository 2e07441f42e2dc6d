"""The model-family registry: which module validates and runs each preset's extraction.

A family is one module with `validate_<family>(cfg)` (every argument error, before any work)
and `extract_<family>(cfg) -> Summary`; a preset belongs to the family of the registry that
defines it. Family modules load only when their presets are used, so the ADM path never
imports diffusers.
"""

from __future__ import annotations

import importlib

from extract.models.adm_presets import MODEL_NAMES, PRESETS
from extract.models.latent_presets import LATENT_PRESETS

FAMILIES = {
    "adm": ("extract.models.adm_run", "validate_adm", "extract_adm"),
    "latent": ("extract.models.latent_run", "validate_latent", "extract_latent"),
}
PRESET_FAMILY = {**{name: "adm" for name in PRESETS}, **{name: "latent" for name in LATENT_PRESETS}}


def family_of(model: str) -> str:
    """The family of a preset name; an unknown name lists the known ones."""
    try:
        return PRESET_FAMILY[model]
    except KeyError:
        raise ValueError(f"unknown model preset {model!r}; choose one of: {', '.join(MODEL_NAMES)}") from None


def family_functions(model: str):
    """(validate, extract) of the preset's family."""
    module, validate, extract = FAMILIES[family_of(model)]
    loaded = importlib.import_module(module)
    return getattr(loaded, validate), getattr(loaded, extract)
