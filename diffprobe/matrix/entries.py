"""A matrix's rows and columns: model entries and dataset entries, from lists or TOML files.

A model entry names what makes its features and where:

    [models.demo-best]            # the entry's name, unique in the matrix
    kind = "run"                  # run (any `extract run --model`), pixels, bigan, classifier,
                                  #   encoder (`extract run --model timm:NAME` or a backbone: no t)
    model = "demo-fmnist"         # kind run: a preset, backbone, diffusers folder preset, ...
    weights = "path/to.pt"        # run: --ckpt; bigan, classifier: --weights (default: shipped)
    random = false                # run: the same architecture with random weights
    t = [10]                      # run: the points, a (t, b, pool) grid; empty: the matrix's
    b = ["30", "31"]              #   default region
    pool = ["4", "full"]          # bigan, classifier: b and pool only
    args = "--dtype bf16"         # more options of the extraction command

A dataset entry names a registry dataset with its root and options:

    [datasets.fmnist]
    data = "fashion-mnist"
    root = ""                     # --data-root (empty: the registry's own place)
    options = ["level=family"]    # --data-opt NAME=VALUE
    splits = ["train", "test"]    # training, test (empty: train/trainval, then test/val)
    limit = 2000                  # a seeded subset of each split (empty: the matrix's LIMIT)

On the command line a list of names stands for entries with only `model` (or `data`) set:
`demo-fmnist,pixels` is a U-Net preset and the raw-pixel baseline.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

# the kinds a list entry names by itself (anything else is an `extract run --model` name)
NAMED_KINDS = ("pixels", "bigan", "classifier")
KIND_NAMES = ("run", *NAMED_KINDS, "encoder")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class EntryError(ValueError):
    """A bad model or dataset entry, in one line that names it (and its file's line)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str = "run"
    model: str = ""
    weights: Path | None = None
    random: bool = False
    t: tuple[int, ...] = ()
    b: tuple[str, ...] = ()
    pool: tuple[str, ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    data: str
    root: Path | None = None
    options: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    limit: int | None = None


@dataclass(frozen=True)
class Source:
    """Where an entry came from, for its errors: a file and line, or the command line."""

    where: str = "the command line"

    def at(self, name: str) -> str:
        return f"{self.where}: entry {name!r}"


def _words(value, what: str) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if isinstance(value, (int, float)):
        return (str(value),)
    return tuple(w for w in re.split(r"[\s,]+", str(value)) if w)


def _ints(value, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _words(value, what))
    except ValueError:
        raise ValueError(f"{what} takes whole numbers, got {value!r}") from None


def _build(cls: type, name: str, values: dict, source: Source):
    known = {f.name for f in fields(cls)} - {"name"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EntryError(f"{source.at(name)}: unknown key {unknown[0]!r} (keys: {', '.join(sorted(known))})")
    if not NAME.match(name):
        raise EntryError(f"{source.at(name)}: a name is letters, digits, '.', '_' and '-'")
    try:
        return cls(name=name, **_typed(cls, values))
    except (TypeError, ValueError) as e:
        raise EntryError(f"{source.at(name)}: {e}") from None


def _typed(cls: type, values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if key in ("t",):
            out[key] = _ints(value, key)
        elif key in ("b", "pool", "options", "splits"):
            out[key] = _words(value, key)
        elif key == "args":
            out[key] = tuple(shlex.split(value)) if isinstance(value, str) else _words(value, key)
        elif key in ("weights", "root"):
            out[key] = Path(value) if str(value) else None
        elif key == "random":
            if not isinstance(value, bool):
                raise ValueError(f"random takes true or false, got {value!r}")
            out[key] = value
        elif key == "limit":
            out[key] = int(value) if str(value) else None
            if out[key] is not None and out[key] < 1:
                raise ValueError(f"limit must be positive, got {value!r}")
        else:
            out[key] = str(value)
    return out


def model_from_name(name: str) -> ModelEntry:
    """A list item: a kind (pixels, bigan, classifier) or an `extract run --model` name."""
    if name in NAMED_KINDS:
        return ModelEntry(name=name, kind=name)
    return ModelEntry(name=name.replace(":", "-"), model=name)


def _line_of(text: str, table: str, name: str) -> int | None:
    header = re.compile(rf"^\s*\[\s*{table}\s*\.\s*\"?{re.escape(name)}\"?\s*\]")
    for number, line in enumerate(text.splitlines(), 1):
        if header.match(line):
            return number
    return None


def read_entries(path: Path, table: str, cls: type) -> list:
    """The `[TABLE.NAME]` entries of a TOML file, in file order; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise EntryError(f"{path}: cannot read ({e.strerror})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EntryError(f"{path}: not valid TOML ({e})") from None
    other = sorted(set(doc) - {table})
    if other or not isinstance(doc.get(table), dict) or not doc[table]:
        raise EntryError(f"{path}: expected [{table}.NAME] tables only (found {other or 'none'})")
    entries = []
    for name, values in doc[table].items():
        line = _line_of(text, table, name)
        source = Source(f"{path}, line {line}" if line else str(path))
        if not isinstance(values, dict):
            raise EntryError(f"{source.at(name)}: expected a table of keys")
        entries.append(_build(cls, name, values, source))
    return entries


def models_from(spec: str) -> list[ModelEntry]:
    """A TOML file of [models.NAME] tables, or a comma list of names."""
    if spec.endswith(".toml") or Path(spec).is_file():
        return read_entries(Path(spec), "models", ModelEntry)
    return [model_from_name(n) for n in _words(spec, "models")]


def datasets_from(spec: str) -> list[DatasetEntry]:
    """A TOML file of [datasets.NAME] tables, or a comma list of registry names."""
    if spec.endswith(".toml") or Path(spec).is_file():
        return read_entries(Path(spec), "datasets", DatasetEntry)
    return [DatasetEntry(name=n, data=n) for n in _words(spec, "datasets")]


def unique(entries: list, what: str) -> list:
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise EntryError(f"two {what} entries are named {e.name!r}: give each its own name")
        seen.add(e.name)
    if not entries:
        raise EntryError(f"no {what} given")
    return entries


@dataclass(frozen=True)
class Region:
    """The points a run-kind entry without its own takes: the matrix's defaults."""

    t: tuple[int, ...] = (150,)
    b: tuple[str, ...] = ("24",)
    pool: tuple[str, ...] = ("2",)
