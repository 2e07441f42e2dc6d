"""`extract run`, `extract blocks` and `extract presets`: the commands that name a model. Their
options are generated from the configs: the shared ones from ExtractConfig's fields, a family's
own from its options class (extract.models.families), so `run --model NAME --help` shows the
shared options and that family's only."""

from __future__ import annotations

from pathlib import Path

import click

from extract.cli_generated import generated, given_value, helping
from extract.store.cli_options import config_options, converted, user_errors
from extract.store.config import ExtractConfig, flat, from_flat
from extract.store.schema import STORE_DTYPES

PLAN_OPTIONS = (
    click.Option(
        ["--plan"],
        is_flag=True,
        help="print what the run would cost (rows, size on disk, U-Net FLOPs, hours) and write nothing",
    ),
    click.Option(
        ["--images-per-s"],
        type=click.FloatRange(min=0, min_open=True),
        help="with --plan: measured forwards (one image, one t) per second, for hours",
    ),
)
MODEL_HELP = ExtractConfig.__dataclass_fields__["model"].metadata["help"]
RUN_DEFAULT = ExtractConfig.__dataclass_fields__["model"].default
BLOCKS_DEFAULT = "adm256-uncond"


class ModelChoice(click.Choice):
    """The registry's model names, and any open-ended one (`timm:NAME`), which its family checks."""

    def convert(self, value, param, ctx):
        from extract.models.families import open_model

        if isinstance(value, str) and open_model(value) is not None:
            return value
        return super().convert(value, param, ctx)


def _choices() -> dict:
    """The registries the fields' choices come from (the floor cannot import them)."""
    from extract.data.augment import AUGMENTATIONS
    from extract.data.registry import DATASETS

    return {"data": list(DATASETS), "aug": list(AUGMENTATIONS), "store_dtype": list(STORE_DTYPES)}


def run_params(args: list[str]) -> list[click.Parameter]:
    """--model, the model family's own options, then its config's (with `extract run`'s defaults:
    ExtractConfig's, wherever the family's config has the same option). Without --model, --help
    shows the shared options only."""
    from extract.models.families import MODELS, model_family, model_forms, open_model

    given = given_value(args, "--model")
    model = given or RUN_DEFAULT
    models = click.Option(["--model"], type=ModelChoice(model_forms()), default=model, help=MODEL_HELP)
    if (model not in MODELS and open_model(model) is None) or (given is None and helping(args)):
        return [models, *config_options(ExtractConfig, choices=_choices(), skip={"model"}), *PLAN_OPTIONS]
    family = model_family(model)
    own = config_options(family.part("options"), choices=_choices()) if family.options else []
    defaults = flat(from_flat(ExtractConfig, out=Path(".")))
    shared = config_options(family.part("config"), defaults=defaults, choices=_choices(), skip={"model"})
    return [models, *own, *shared, *(PLAN_OPTIONS if family.validate else ())]


def run_forms() -> list[list[str]]:
    """The words of one model of every family: what other forms of `run` take."""
    from extract.models.families import MODELS, OPEN_MODELS

    firsts = {m.family: name for name, m in reversed(MODELS.items())}
    return [["--model", name] for name in [*firsts.values(), *(p + "NAME" for p in OPEN_MODELS)]]


def _said(result) -> str:
    """A run's summary line (diffusion families return a Summary, the others a line)."""
    return result.line() if hasattr(result, "line") else str(result)


@generated(run_params, forms=run_forms, subject=lambda args: given_value(args, "--model") or RUN_DEFAULT)
@user_errors
def run(plan: bool = False, images_per_s: float | None = None, **values):
    """Extract features of the chosen blocks, timesteps and pool sizes into one store.

    The options of a model's family (e.g. --model-flags, --prompt, --model-dir) show with
    `run --model NAME --help`."""
    from extract.models.families import model_family

    family = model_family(values["model"])
    if family.options:
        values = converted(family.part("options"), values)
    config = from_flat(family.part("config"), **values)
    if getattr(config, "log_snr", ()):
        from extract.models.families import timesteps_at_log_snr

        config = timesteps_at_log_snr(config)
    if plan:
        from extract.cost import plan as plan_run

        click.echo(plan_run(config, images_per_s).line())
        return
    click.echo(_said(family.part("run")(config)))


def blocks_params(args: list[str]) -> list[click.Parameter]:
    """--model (a diffusion preset, or an open-ended name such as timm:NAME) and the family's
    options that say which network it builds."""
    from extract.models.families import FAMILIES, OPEN_MODELS, PRESET_FAMILY, model_family, open_model

    model = given_value(args, "--model") or BLOCKS_DEFAULT
    tables = [p + "NAME" for p, family in OPEN_MODELS.items() if FAMILIES[family].block_table]
    models = click.Option(
        ["--model"],
        type=ModelChoice([*PRESET_FAMILY, *tables]),
        default=BLOCKS_DEFAULT,
        help="model preset, 'diffusers' with --model-dir, or " + ", ".join(tables),
    )
    if model not in PRESET_FAMILY and open_model(model) is None:
        return [models]
    return [models, *config_options(model_family(model).part("options"), only="network")]


@generated(
    blocks_params, forms=run_forms, subject=lambda args: given_value(args, "--model") or BLOCKS_DEFAULT
)
@user_errors
def blocks(model: str, **values):
    """Print b -> module, layers, channels and resolution (no weights are allocated)."""
    from extract.models.families import model_family

    family = model_family(model)
    options = family.part("options")(**converted(family.part("options"), values))
    preset = family.part("preset")(model, options)
    rows = family.part("block_table")(preset)
    if getattr(preset, "flags", ""):  # a U-Net built from a flag line, named flags:<hash>
        click.echo(f"{preset.name}: {preset.flags}")
    width = max(18, *(len(r.module) for r in rows))
    click.echo(f"{'b':>3}  {'module':<{width}} {'layers':<34} {'C':>5} {'H x W':>9} {'values':>9}")
    for r in rows:
        size = f"{r.height}x{r.width}"
        click.echo(f"{r.b:>3}  {r.module:<{width}} {r.layers:<34} {r.channels:>5} {size:>9} {r.numel:>9}")


@click.command()
def presets():
    """List the model presets."""
    from extract.models.families import MODELS, PRESET_FAMILY

    for name in PRESET_FAMILY:
        p = MODELS[name].preset
        if p is None:
            continue
        blocks = f"{p.num_blocks:>2}" if hasattr(p, "num_blocks") else " ?"
        click.echo(f"{name:<15} {p.image_size:>4}px  {blocks} blocks  {p.description}")
    from extract.models.diffusers_spec import FOLDER_MODEL

    click.echo(
        f"{FOLDER_MODEL:<15}   any           any local diffusers folder (--model-dir): U-Net or transformer, "
        "-b by module path"
    )
    flags = "any guided-diffusion U-Net, from the flag line its README gives"
    click.echo(f"{'--model-flags':<15}   any           {flags}")
