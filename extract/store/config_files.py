"""`--config FILE` for every command of the three stages: a TOML, YAML or JSON file whose keys are
the command's options (spelled as on the command line, `batch-size`, or as their names,
`batch_size`). Options given on the command line win over the file. A results file that
records its invocation (`probe train`, `probe finetune`) is itself a config: `--config
results/run.json` reruns the same thing.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import click

from extract.store.cli_options import pool_list
from extract.store.schema import FULL

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def read_config(path: Path) -> dict:
    """The option -> value pairs of a config file (or of a results file's recorded invocation)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path}: a config file ends in {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # PyYAML, only for YAML configs

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse failure is one line naming the file
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable {path.suffix.lstrip('.').upper()} file ({why})") from None
    if isinstance(data, dict) and isinstance(data.get("invocation"), dict):  # a results file
        data = data["invocation"].get("options")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file holds option = value pairs")
    return data


def _key(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def _spellings(command: click.Command) -> dict[str, click.Parameter]:
    out = {}
    for p in command.params:
        if p.name == "config" or not p.expose_value:
            continue
        out[p.name] = p
        for flag in [*p.opts, *getattr(p, "secondary_opts", [])]:
            if flag.startswith("--"):
                out.setdefault(_key(flag), p)
    return out


def _as_default(param: click.Parameter, value):
    """A config value in the form click's defaults take: lists of words for repeatable options."""
    if param.multiple or param.nargs == -1:
        values = value if isinstance(value, (list, tuple)) else [value]
        if param.callback is pool_list:
            values = [FULL if v is None else v for v in values]
        return [v if isinstance(v, bool) else str(v) for v in values]
    return value


def _fail(ctx: click.Context, message: str):
    """One line and exit status 2, as every user error."""
    click.echo(f"error: {message}", err=True)
    ctx.exit(2)


def _load(ctx: click.Context, param: click.Parameter, value) -> None:
    if value is None:
        return
    try:
        data = read_config(value)
    except (ValueError, FileNotFoundError) as e:
        _fail(ctx, str(e))
    names = _spellings(ctx.command)
    unknown = sorted(k for k in data if _key(k) not in names)
    if unknown:
        _fail(ctx, f"{value}: not options of this command: {', '.join(unknown)}")
    secondary = {_key(f) for p in ctx.command.params for f in getattr(p, "secondary_opts", [])}
    defaults = {}
    for k, v in data.items():
        p = names[_key(k)]
        if v is None:
            continue
        if _key(k) in secondary and isinstance(v, bool):  # no_progress = true means progress = false
            v = not v
        defaults[p.name] = _as_default(p, v)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def config_option() -> click.Option:
    return click.Option(
        ["--config"],
        type=click.Path(dir_okay=False, path_type=Path),
        is_eager=True,
        expose_value=False,
        callback=_load,
        help="a TOML, YAML or JSON file of this command's options (or a results file, to rerun it); "
        "the command line wins",
    )


def add_config_option(group: click.Group) -> None:
    """Give every command of the group (and of its subgroups) `--config FILE`."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            add_config_option(command)
        elif not any(p.name == "config" for p in command.params):
            command.params.insert(0, config_option())
