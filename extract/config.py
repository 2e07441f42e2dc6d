"""The parts every store writer's config is made of (torch-free).

`DataSelection` says which images (dataset, split, subsets); `StoreOptions` says where and
how the store is written. `ExtractConfig`, `PixelConfig` and `BackboneConfig` each hold one
of both, so the options mean the same thing for every kind of store, and the command line
reads its defaults from here. Stores record a config flat (one name per option, as the
command line spells them): `flat` writes that form and `from_flat` reads it back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataSelection:
    """Which images: a dataset split, optionally narrowed (applied in this order: classes,
    image list, per-class sampler, random limit; see extract.subsets)."""

    data: str = "fashion-mnist"
    data_root: Path | None = None
    split: str = "train"
    data_opts: tuple[str, ...] = ()  # dataset options, key=value (e.g. level=family for aircraft)
    classes_file: Path | None = None  # keep only these classes
    subset: Path | None = None  # keep only the images this file lists (e.g. ImageNet's 1% list)
    per_class: int | None = None  # N seeded images of each class
    limit: int | None = None  # a seeded random subset of this many images
    order: str = "sorted"  # row order in the store: "sorted" (dataset order) or "shuffled" (seeded)


@dataclass(frozen=True)
class StoreOptions:
    """Where the store goes and how it is written (none of these change a value)."""

    out: Path
    shard_rows: int = 2048  # rows per shard: the unit of work, writing and resume
    overwrite: bool = False  # replace a store made with other arguments
    progress: bool = True


PARTS = {"selection": DataSelection, "store": StoreOptions}


def flat(cfg) -> dict:
    """A config as one flat dict: the parts' fields inline, next to the config's own."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out.update(dataclasses.asdict(value) if f.name in PARTS else {f.name: value})
    return out


def from_flat(cls, **values):
    """Build a config from flat names (as the command line and stores spell them). An unknown
    name is an error, never ignored."""
    own = {f.name for f in dataclasses.fields(cls)}
    parts = {name: PARTS[name] for name in own & set(PARTS)}
    known = (own - set(parts)) | {f.name for part in parts.values() for f in dataclasses.fields(part)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
    kwargs = {k: v for k, v in values.items() if k in own and k not in parts}
    for name, part in parts.items():
        given = {f.name: values[f.name] for f in dataclasses.fields(part) if f.name in values}
        default = next(f for f in dataclasses.fields(cls) if f.name == name).default
        if default is dataclasses.MISSING:
            kwargs[name] = part(**given)
        else:
            kwargs[name] = dataclasses.replace(default, **given)
    return cls(**kwargs)
