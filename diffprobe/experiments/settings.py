"""The settings every experiment reads: one typed record, its defaults in settings.toml.

They resolve in this order, the later winning: settings.toml; the experiment's own
`[NAME.settings]` in experiments.toml; the record of the last `make extract`
(`<out>/last-extract.json`), for experiments that read it; what the user gave (`--set
name=value`, or a make variable of the same name in upper case); the chosen row
(`[NAME.rows.ROW]`). Every value is parsed to its field's type before any step runs, so a
mistake is one line naming the setting (and its choices) instead of a failure half way.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from extract.store.location import Location, read_text, store_location

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Settings:
    """One experiment's settings (settings.toml says what each means). None: not given."""

    model: str
    ckpt: Path | None
    random: bool
    data: str
    data_root: Path | None
    splits: tuple[str, ...]
    t: tuple[int, ...]
    b: tuple[str, ...]
    pool: tuple[str, ...]
    limit: int | None
    views: int
    aug: str
    order: Literal["sorted", "shuffled"]
    seed: int | None
    seeds: tuple[int, ...]
    block_pools: str
    dtype: Literal["fp32", "bf16", "fp16"]
    args: str
    out: Path
    store_out: Path | None
    images_per_s: float | None
    head: str
    lr: tuple[float, ...]
    wd: tuple[float, ...]
    recipe: str
    results: Path
    name: str
    probe_args: str
    features: str
    views_mode: Literal["draw", "mean"]
    cka_t: int | None
    cka_b: str
    cka_pool: str
    cka_ts: tuple[int, ...]
    cka_split: str
    cka_limit: int | None
    cka_out: Path
    row: str
    paper_args: str
    sample_n: int
    sample_steps: int
    sampler: Literal["ddpm", "ddim"]
    sample_out: Path | None
    sample_args: str
    ft_out: Path
    finetune_args: str
    report_title: str


# what `make extract` records for a bare `make probe` or `make cka`, as strings (the record's format)
RECORDED = (
    "model",
    "ckpt",
    "random",
    "data",
    "data_root",
    "splits",
    "t",
    "b",
    "pool",
    "limit",
    "block_pools",
    "aug",
    "views",
    "order",
    "dtype",
    "seed",
)
# the settings that name where stores go: a folder or an object-storage URL
STORE_FOLDERS = ("out", "store_out")
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def field_types(cls: type = Settings) -> dict[str, object]:
    return typing.get_type_hints(cls)


def read_toml(name: str) -> dict:
    with (HERE / name).open("rb") as f:
        return tomllib.load(f)


def parse_value(name: str, kind, value):
    """A setting's value (a user's string, or a TOML value) as its field's type; a bad one is
    a ValueError that names the setting as make spells it and what it takes."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # X | None: empty means not given
        if value is None or value == "":
            return None
        return parse_value(name, next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        items = value if isinstance(value, list) else [w for w in re.split(r"[\s,]+", str(value)) if w]
        return tuple(parse_value(name, args[0], item) for item in items)
    text = str(value).strip()
    if origin is Literal:
        if text not in args:
            raise ValueError(f"{name.upper()}={text}: choose one of {' '.join(args)}")
        return text
    if kind is bool:
        if isinstance(value, bool) or text.lower() in TRUE + FALSE:
            return value if isinstance(value, bool) else text.lower() in TRUE
        raise ValueError(f"{name.upper()}={text}: give 1 (yes) or nothing")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(
                f"{name.upper()}={text}: expected {'an integer' if kind is int else 'a number'}"
            ) from None
    if kind is Path and name in STORE_FOLDERS:
        return store_location(text)  # a folder or a URL (s3://bucket/prefix), never a mangled URL
    return Path(text) if kind is Path else text


def format_value(value) -> str:
    """A setting's value as a user writes it (and as the record keeps it): the inverse of parse_value."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def build(values: dict, cls: type = Settings):
    """The typed settings from raw values; every field must be given, and nothing else."""
    kinds = field_types(cls)
    unknown, missing = sorted(set(values) - set(kinds)), sorted(set(kinds) - set(values))
    if unknown or missing:
        raise ValueError(f"{cls.__name__}: unknown {unknown}, missing {missing}")
    return cls(**{name: parse_value(name, kind, values[name]) for name, kind in kinds.items()})


def defaults(cls: type = Settings):
    """The settings as settings.toml gives them."""
    return build(read_toml("settings.toml"), cls)


def record_path(values: dict) -> Location:
    """`<OUT>/last-extract.json`: a file, or an object beside the stores when OUT is a URL."""
    return store_location(str(values["out"])) / "last-extract.json"


def record_values(settings: Settings) -> dict[str, str]:
    """The record `make extract` writes: the recorded settings as strings, one per name."""
    values = {name: format_value(getattr(settings, name)) for name in RECORDED}
    values["splits"] = " ".join(settings.splits)
    return values


def resolve(
    table: dict,
    given: dict[str, str],
    row: str | None = None,
    *,
    reads_record: bool = False,
    cls: type = Settings,
):
    """An experiment's settings, in the order the module docstring gives. `table` is the
    experiment's entry of experiments.toml ({"settings": ..., "rows": ..., "default_row": ...})."""
    values: dict = read_toml("settings.toml")
    values.update(table.get("settings", {}))
    unknown = sorted(set(given) - set(field_types(cls)))
    if unknown:
        raise ValueError(f"no setting {', '.join(unknown)}; the settings are: {', '.join(field_types(cls))}")
    if reads_record:
        text = read_text(record_path({**values, **given}))
        if text is not None:
            values.update({k: v for k, v in json.loads(text).items() if k in RECORDED})
    values.update(given)
    rows = table.get("rows", {})
    if rows:
        row = row or str(values.get("row") or "") or table.get("default_row")
        if row not in rows:
            raise ValueError(f"unknown ROW={row}: choose one of {' '.join(rows)}")
        values.update(rows[row])
        values["row"] = row
    elif row:
        raise ValueError(f"ROW={row}: this experiment has no rows")
    return build(values, cls)


def from_environment(environ: dict[str, str], cls: type = Settings) -> dict[str, str]:
    """The settings given as environment variables of the same name in upper case (how make
    hands over the variables given on its command line)."""
    return {k: environ[k.upper()] for k in field_types(cls) if k.upper() in environ}


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        out[key.strip().lower()] = value
    return out
