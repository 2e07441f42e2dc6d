"""The ADM family's own options: guided-diffusion U-Nets, named by a preset (extract.models.adm_presets)
or built from the flag line of --model-flags (extract.models.adm_flags). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from extract.models.adm_flags import HELP, checked_preset, take_model_flags
from extract.models.adm_presets import ModelPreset, get_preset
from extract.store.config import option


@dataclass(frozen=True)
class AdmOptions:
    model_flags: str = option("", HELP, convert=take_model_flags, network=True)
    class_label: int | None = option(
        None, "label given to class-conditional models (all images) [default: 0]"
    )


def adm_preset(model: str, options: AdmOptions) -> ModelPreset:
    """The U-Net a run builds: the one its flag line gives (the model keeps its default name),
    else the named preset."""
    return checked_preset(options.model_flags) if options.model_flags else get_preset(model)
