"""Command-line helpers shared by the three stages' CLIs (torch-free, part of the floor).

One error policy (`user_errors`) and one parser per kind of value, so `-t 10,50`, `-b all`,
`--pool 2,full` and feature labels mean the same in `python -m extract`, `python -m probe`
and `python -m analysis`.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from pathlib import Path

import click

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
    if isinstance(value, Path):
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
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        finally:
            _INVOCATION.reset(token)

    return wrapper


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
