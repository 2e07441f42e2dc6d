"""Command-line helpers shared by the three stages' CLIs (torch-free, part of the floor).

One error policy (`user_errors`) and one parser per kind of value, so `-t 10,50`, `-b all`,
`--pool 2,full` and feature labels mean the same in `python -m extract`, `python -m probe`
and `python -m analysis`; and options generated from a config dataclass's fields
(`config_options`), as guided-diffusion's add_dict_to_argparser does, so each default is
written once.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import sys
import types
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import click

from extract.store.location import StoreURL, is_storage_error, one_line, store_location
from extract.store.schema import FULL, parse_pool

ALL_BLOCKS = "all"


_INVOCATION: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "diffprobe_invocation", default=None
)


def invocation() -> dict | None:
    """The running command and its resolved options, as `--config` takes them back (results
    files record it); None outside a command."""
    return _INVOCATION.get()


def _jsonable(value):
    if isinstance(value, (Path, StoreURL)):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def user_errors(fn):
    """Library errors that a user can fix become one line on stderr and exit status 2. While
    the command runs, `invocation()` gives its name and resolved options."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context(silent=True)
        record = (
            {"command": ctx.command_path, "options": {k: _jsonable(v) for k, v in ctx.params.items()}}
            if ctx
            else None
        )
        token = _INVOCATION.set(record)
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, PermissionError, OSError) as e:
            click.echo(f"error: {one_line(e)}", err=True)
            sys.exit(2)
        except Exception as e:
            if not is_storage_error(e):  # object storage's errors, whatever their class
                raise
            click.echo(f"error: {one_line(e)}", err=True)
            sys.exit(2)
        finally:
            _INVOCATION.reset(token)

    return wrapper


class StoreParam(click.ParamType):
    """A store's location: a path, or a file://, s3://, gs:// or az:// URL (kept whole: a URL never
    goes through Path, which would make it a local folder named `s3:`)."""

    name = "store"

    def convert(self, value, param, ctx):
        try:
            return store_location(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


STORE = StoreParam()


def _words(values) -> list[str]:
    """Repeated and/or comma-separated values: ('10', '50,150') -> ['10', '50', '150']."""
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def _typed_list(values, cast, what: str) -> tuple:
    out = []
    for word in _words(values):
        try:
            out.append(cast(word))
        except ValueError:
            raise click.BadParameter(f"{word!r} is not {what}") from None
    return tuple(dict.fromkeys(out))


def int_list(ctx, param, values) -> tuple[int, ...]:
    """`-t 10 -t 50,150` -> (10, 50, 150), duplicates dropped."""
    return _typed_list(values, int, "an integer")


def float_list(ctx, param, values) -> tuple[float, ...]:
    return _typed_list(values, float, "a number")


def block_list(ctx, param, values) -> tuple[int | str, ...]:
    """Like int_list, and `all` for every block of the model."""
    words = _words(values)
    if ALL_BLOCKS in (w.lower() for w in words):
        return (ALL_BLOCKS,)
    return int_list(ctx, param, words)


def block_or_module_list(ctx, param, values) -> tuple[int | str, ...]:
    """Like block_list; a word that is not a number is a module path (e.g. down_blocks.2.resnets.1),
    which the model's family resolves (extraction only: stores number their blocks)."""
    words = _words(values)
    if ALL_BLOCKS in (w.lower() for w in words):
        return (ALL_BLOCKS,)
    return tuple(dict.fromkeys(int(w) if w.lstrip("-").isdigit() else w for w in words))


def pool_list(ctx, param, values) -> tuple[int | None, ...]:
    """`--pool 1,2,full` -> (1, 2, None)."""
    out = []
    for word in _words(values):
        try:
            out.append(parse_pool(word))
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return tuple(dict.fromkeys(out))


def key_options(
    t_default=None, b_default=None, pool_default=None, what: str = "features", module_names: bool = False
):
    """-t/--t, -b/--block and --pool, spelled and parsed alike in every stage's CLI; with
    `module_names`, -b also takes a module path (extraction)."""
    hint = f"pool sizes p (p x p), or '{FULL}' for the whole map"

    def decorate(fn):
        for option in reversed(
            [
                click.option(
                    "-t",
                    "--t",
                    "ts",
                    multiple=True,
                    default=t_default,
                    callback=int_list,
                    help=f"timesteps of the {what}, repeated or comma-separated",
                ),
                click.option(
                    "-b",
                    "--block",
                    "--b",
                    "blocks",
                    multiple=True,
                    default=b_default,
                    callback=block_or_module_list if module_names else block_list,
                    help=f"blocks of the {what} (1..2L+1), or '{ALL_BLOCKS}'"
                    + (
                        ", or module paths (diffusers models, e.g. down_blocks.2.resnets.1)"
                        if module_names
                        else ""
                    ),
                ),
                click.option(
                    "--pool", "pools", multiple=True, default=pool_default, callback=pool_list, help=hint
                ),
            ]
        ):
            fn = option(fn)
        return fn

    return decorate


# ---------------------------------------------------------------- options generated from configs
def _unwrap(hint) -> Any:
    """`X | None` -> X; any other type as it is."""
    args = get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def config_fields(cls, default=None):
    """(name, type, default, metadata) of every command-line field of a config dataclass, its
    parts' fields inline (a field whose type is itself a dataclass), as flat names. `default`: an
    instance whose values are the defaults (a part's default in its config)."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        value = getattr(default, f.name) if default is not None else f.default
        if dataclasses.is_dataclass(hints[f.name]):
            yield from config_fields(hints[f.name], None if value is dataclasses.MISSING else value)
        else:
            yield f.name, hints[f.name], value, f.metadata


# the parser of each kind of repeatable option, by the type of one value
_LIST_PARSERS = {int: int_list, int | None: pool_list, int | str: block_or_module_list, float: float_list}


def _word(value) -> str:
    return FULL if value is None else str(value)


def _as_int(ctx, param, value):
    return None if value is None else int(value)


def field_option(name: str, hint, default, meta, choices=None) -> click.Option:
    """One click option from a config field: flags, type, default and help from the field."""
    flags = list(meta.get("flags") or (f"--{name.replace('_', '-')}",))
    base = _unwrap(hint)
    choices = choices if choices is not None else meta.get("choices")
    kw: dict[str, Any] = {"help": meta.get("help") or None, "metavar": meta.get("metavar")}
    if default is dataclasses.MISSING:
        kw["required"] = True
    else:
        kw["default"] = default
    if base is bool:
        return click.Option([f"{flags[0]}/--no-{flags[0][2:]}", name], **kw)
    if get_origin(base) is tuple:
        kw["default"] = tuple(_word(v) for v in default or ())
        one = get_args(base)[0]
        return click.Option([*flags, name], multiple=True, callback=_LIST_PARSERS.get(one), **kw)
    if choices is not None:
        kw["type"] = click.Choice([str(c) for c in choices])
        kw["callback"] = _as_int if base is int else None
        if kw.get("default") is not None:
            kw["default"] = str(kw["default"])
    elif base is int:
        kw["type"] = click.IntRange(min=meta["min"]) if "min" in meta else int
    elif base is float:
        kw["type"] = float
    elif meta.get("store"):
        kw["type"] = STORE
    elif base is Path:
        kw["type"] = click.Path(path_type=Path)
    return click.Option([*flags, name], **kw)


def config_options(
    cls, *, defaults: dict | None = None, choices: dict | None = None, only=None, skip=()
) -> list[click.Option]:
    """The command-line options of a config dataclass, generated from its fields (its parts'
    inline), so each default is written once, in the dataclass. `defaults` and `choices` by
    flat name override the fields' (a command's own defaults; registries the floor cannot
    import); `only` keeps the fields whose metadata sets that key; `skip`: names left out."""
    defaults, choices = defaults or {}, choices or {}
    return [
        field_option(name, hint, defaults.get(name, default), meta, choices.get(name))
        for name, hint, default, meta in config_fields(cls)
        if name not in skip and (only is None or meta.get(only))
    ]


def converted(cls, values: dict) -> dict:
    """Command-line values with each field's `convert` applied (e.g. a flag line read and written
    one way); a bad value raises ValueError, which the command reports as one line."""
    out = dict(values)
    for name, _, _, meta in config_fields(cls):
        if meta.get("convert") and name in out:
            out[name] = meta["convert"](out[name])
    return out


def run_options(out: str, max_images: int, images_help: str, stop_step: bool = True):
    """A trainer's run folder and budget: --out, --max-images, --max-minutes and (with
    `stop_step`) --stop-step, spelled alike by every trainer."""
    options = [
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            default=Path(out),
            show_default=True,
            help="run folder (resumed when it holds a checkpoint)",
        ),
        click.option(
            "--max-images",
            type=click.IntRange(min=1),
            default=max_images,
            show_default=True,
            help=images_help,
        ),
        click.option(
            "--max-minutes",
            type=click.FloatRange(min=0, min_open=True),
            help="stop (with a checkpoint) after this much wall time",
        ),
    ]
    if stop_step:
        options.append(
            click.option(
                "--stop-step",
                type=click.IntRange(min=1),
                help="stop (with a checkpoint) after this step; the lr schedule still runs to --max-images",
            )
        )

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
