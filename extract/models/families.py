"""The model-family registry: every kind of network (or none) that writes a feature store, and
the one registry of the models `extract run` names.

A family is one module and one row here. The row names, as "module:attribute" (imported only
when used, so the ADM path never imports diffusers and a pixel store never imports a U-Net):
- `config`: the frozen config its run takes (built from flat option names);
- `run`: config -> summary; writes (or resumes) the store through the one writer;
- `kinds`: the provenance kinds of the stores it writes, which `verify --repair` reads back;
- `options`: the frozen dataclass of the family's own options, the `options` of its
  ExtractConfig (diffusion families); the command line is generated from its fields;
- `validate`: config -> every argument error before any work (diffusion families);
- `block_table`: preset -> its b -> module table (diffusion families);
- `schedule`: (preset, options) -> its noise schedule (`extract.models.schedules`; diffusion families);
- `preset`: (model, options) -> the preset a run builds (diffusion families, and timm's).
`MODELS` maps every name `extract run --model` takes to its family and its preset;
`OPEN_MODELS` the prefixes of open-ended names (`timm:NAME`, any name the library knows).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from extract.models.adm_presets import PRESETS as ADM_PRESETS
from extract.models.backbone_options import BACKBONE_NAMES
from extract.models.diffusers_spec import FOLDER_MODEL, PRESET_SPECS
from extract.models.latent_presets import LATENT_PRESETS


@dataclass(frozen=True)
class Family:
    config: str
    run: str
    kinds: tuple[str, ...]
    options: str | None = None
    validate: str | None = None
    block_table: str | None = None
    preset: str | None = None
    schedule: str | None = None

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
        "extract.models.adm_options:AdmOptions",
        "extract.models.adm_run:validate_adm",
        "extract.models.adm_blocks:block_table",
        "extract.models.adm_options:adm_preset",
        "extract.models.schedules:adm_preset_schedule",
    ),
    "latent": Family(
        DIFFUSION_CONFIG,
        "extract.models.latent_run:extract_latent",
        ("latent",),
        "extract.models.latent_options:LatentOptions",
        "extract.models.latent_run:validate_latent",
        "extract.models.latent_blocks:latent_block_table",
        "extract.models.latent_options:latent_preset",
        "extract.models.latent:preset_schedule",
    ),
    "diffusers": Family(
        DIFFUSION_CONFIG,
        "extract.models.diffusers_run:extract_diffusers",
        ("diffusers",),
        "extract.models.diffusers_options:DiffusersOptions",
        "extract.models.diffusers_run:validate_diffusers",
        "extract.models.diffusers_run:block_table",
        "extract.models.diffusers_options:diffusers_spec",
        "extract.models.diffusers_any:preset_schedule",
    ),
    "backbone": Family(
        "extract.models.backbone_options:BackboneConfig",
        "extract.models.backbones:extract_backbone",
        ("backbone",),
    ),
    "pixels": Family(
        "extract.models.pixels:PixelConfig", "extract.models.pixels:extract_pixels", ("pixels",)
    ),
    "features": Family(
        "extract.models.feature_store:FeatureStoreConfig",
        "extract.models.feature_store:extract_features",
        ("features",),
    ),
    "timm": Family(
        "extract.models.timm_options:TimmConfig",
        "extract.models.timm_run:extract_timm",
        ("timm",),
        "extract.models.timm_options:TimmOptions",
        block_table="extract.models.timm_build:block_table",
        preset="extract.models.timm_options:timm_spec",
    ),
    # networks read layer by layer from a weights file (the BiGAN encoder, the Fashion-MNIST
    # classifier): one row each in extract.models.staged
    "staged": Family(
        "extract.models.staged:StagedConfig",
        "extract.models.staged:extract_staged",
        ("bigan", "classifier-layers"),
    ),
}


@dataclass(frozen=True)
class Model:
    """A name `extract run --model` takes: its family, and its preset where the name alone gives
    one (a folder gives the `diffusers` model's; a backbone has none)."""

    family: str
    preset: object | None = None


MODELS: dict[str, Model] = {
    **{name: Model("adm", preset) for name, preset in ADM_PRESETS.items()},
    **{name: Model("latent", preset) for name, preset in LATENT_PRESETS.items()},
    FOLDER_MODEL: Model("diffusers"),
    **{name: Model("diffusers", spec) for name, spec in PRESET_SPECS.items()},
    **{name: Model("backbone") for name in BACKBONE_NAMES},
}
# the diffusion presets: the models whose family validates an ExtractConfig
PRESET_FAMILY = {name: m.family for name, m in MODELS.items() if FAMILIES[m.family].validate}
# open-ended names, "<prefix><name>": the family checks the name when it builds the network
OPEN_MODELS: dict[str, str] = {"timm:": "timm"}


def open_model(model: str) -> str | None:
    """The prefix of an open-ended model name (`timm:` of `timm:resnet50`), or None."""
    return next((p for p in OPEN_MODELS if model.startswith(p) and len(model) > len(p)), None)


def model_forms() -> list[str]:
    """Every name --model takes, an open prefix as `<prefix>NAME`."""
    return [*MODELS, *(p + "NAME" for p in OPEN_MODELS)]


def model_entry(model: str, diffusion_only: bool = False) -> Model:
    """The registry's row of a model name; an unknown name lists the known ones."""
    names = PRESET_FAMILY if diffusion_only else MODELS
    prefix = None if diffusion_only else open_model(model)
    if prefix is not None:
        return Model(OPEN_MODELS[prefix])
    if model not in names:
        known = list(names) if diffusion_only else model_forms()
        raise ValueError(f"unknown model preset {model!r}; choose one of: {', '.join(known)}")
    return MODELS[model]


def family_of(model: str) -> str:
    """The family of a diffusion preset's name; an unknown name lists the known ones."""
    return model_entry(model, diffusion_only=True).family


def model_family(model: str) -> Family:
    """The family of any name `extract run --model` takes."""
    return FAMILIES[model_entry(model).family]


def options_class(model: str) -> type:
    """The options class of a diffusion preset's family (the `options` of its ExtractConfig), or
    of an open-ended name's (`timm:NAME`: the `options` of its family's config)."""
    family = FAMILIES[family_of(model)] if open_model(model) is None else model_family(model)
    return family.part("options")


def preset_of(model: str, options=None):
    """The preset a run of this diffusion model builds: the registry's, or the one its family
    makes from its options (a flag line, a model folder). `options`: the family's options object
    (None: its defaults)."""
    family = FAMILIES[family_of(model)]
    given = options if options is not None else family.part("options")()
    return family.part("preset")(model, given)


def family_functions(model: str):
    """(validate, run) of a diffusion preset's family."""
    family = FAMILIES[family_of(model)]
    return family.part("validate"), family.part("run")


def block_table(model: str, options=None):
    """The preset's block table (rows: b, module, layers, channels, height, width, numel);
    `options`: the family's options (e.g. the folder of a model read from one)."""
    return FAMILIES[family_of(model)].part("block_table")(preset_of(model, options))


def family_of_kind(kind: str) -> Family | None:
    """The family that writes stores of this provenance kind, or None."""
    return next((f for f in FAMILIES.values() if kind in f.kinds), None)


def noise_schedule(model: str, options=None):
    """A diffusion preset's noise schedule (`extract.models.schedules.NoiseSchedule`); `options`:
    its family's options (e.g. the folder whose scheduler config it reads; None: defaults)."""
    family = FAMILIES[family_of(model)]
    given = options if options is not None else family.part("options")()
    return family.part("schedule")(preset_of(model, given), given)


def timesteps_at_log_snr(cfg):
    """A diffusion run's config with its timesteps chosen by noise level: the t nearest each of
    `cfg.log_snr` in the model's own schedule. Giving -t too is refused."""
    from dataclasses import replace

    from extract.models.schedules import ts_for_log_snr

    default = type(cfg).__dataclass_fields__["ts"].default
    if tuple(cfg.ts) != tuple(default):
        raise ValueError("give the timesteps by -t or by --log-snr, not both")
    if FAMILIES[family_of(cfg.model)].schedule is None:
        raise ValueError(f"{cfg.model} has no noise schedule: --log-snr is for diffusion models")
    return replace(cfg, ts=ts_for_log_snr(noise_schedule(cfg.model, cfg.options), cfg.log_snr))
