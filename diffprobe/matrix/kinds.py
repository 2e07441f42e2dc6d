"""How each kind of model entry makes one split's store: the extraction step and the store's name.

- run: `extract run --model NAME` (any preset, `--model-flags`, a diffusers folder, a backbone,
  a staged network) at the entry's (t, b, pool) grid; the cell's seed is the noise seed, and
  the images are always data seed 0's, so every model of a dataset sees the same rows.
- pixels: `extract pixels`, the raw-pixel baseline (no seed: nothing is random).
- bigan: `extract bigan-features`, the BiGAN encoder's stages (b, pool).
- classifier: `extract classifier-layers`, the shipped supervised classifier's layers (b, pool).
- encoder: `extract run --model NAME` for a network that sees no noise (`timm:NAME`, a
  torchvision backbone) at the entry's (b, pool), with its --ckpt or --random-init (no seed).

A run store is named as every other experiment names it (so a store `make demo-table` made is
reused); the others carry a digest of their arguments.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from diffprobe.experiments.steps import Command, Extract, extract_config
from diffprobe.experiments.stores import store_path
from diffprobe.matrix.entries import NAMED_KINDS, DatasetEntry, EntryError, ModelEntry, Region

Step = Extract | Command


@dataclass(frozen=True)
class Split:
    """One split of a cell's dataset: what the extraction reads."""

    dataset: DatasetEntry
    split: str
    limit: int | None
    seed: int


def data_args(s: Split) -> list[str]:
    args = ["--data", s.dataset.data, "--split", s.split]
    args += ["--data-root", str(s.dataset.root)] if s.dataset.root else []
    args += [a for o in s.dataset.options for a in ("--data-opt", o)]
    return args + (["--limit", str(s.limit)] if s.limit else [])


def _joined(values) -> str:
    return ",".join(str(v) for v in values)


def points(entry: ModelEntry, region: Region) -> tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
    """The entry's (t, b, pool) grid, each axis the region's where the entry gives none."""
    return (entry.t or region.t, entry.b or region.b, entry.pool or region.pool)


def run_step(entry: ModelEntry, s: Split, folder: Path, region: Region) -> Step:
    t, b, pool = points(entry, region)
    weights = ["--ckpt", str(entry.weights)] if entry.weights else []
    weights += ["--random-init"] if entry.random else []
    head = ["run", "--model", entry.model, *weights, *data_args(s)]
    head += ["-t", _joined(t), "-b", _joined(b), "--pool", _joined(pool)]
    head += ["--seed", str(s.seed), "--data-seed", "0", *entry.args]
    cfg = extract_config((*head, "--out", ".", "--no-progress"), shown=tuple(head))
    out = store_path(folder, cfg)
    return Extract(
        (*head, "--out", str(out), "--no-progress"), replace(cfg, store=replace(cfg.store, out=out))
    )


def _digest(argv: list[str]) -> str:
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:10]


def _command_step(command: str, argv: list[str], s: Split, folder: Path) -> Step:
    name = f"{command}_{s.dataset.data}_{s.split}{f'_n{s.limit}' if s.limit else ''}_{_digest(argv)}.zarr"
    return Command("extract", (command, *argv, "--no-progress", "--out", str(folder / name)))


def pixels_step(entry: ModelEntry, s: Split, folder: Path, region: Region) -> Step:
    return _command_step("pixels", [*data_args(s), *entry.args], s, folder)


def _network_step(command: str) -> Callable[[ModelEntry, Split, Path, Region], Step]:
    def step(entry: ModelEntry, s: Split, folder: Path, region: Region) -> Step:
        argv = ["--weights", str(entry.weights)] if entry.weights else []
        argv += [*data_args(s), "-b", _joined(entry.b or ("all",)), "--pool", _joined(entry.pool or ("1",))]
        return _command_step(command, [*argv, "--skip-small-maps", *entry.args], s, folder)

    return step


@dataclass(frozen=True)
class Kind:
    step: Callable[[ModelEntry, Split, Path, Region], Step]
    seeded: bool  # whether the cell's seed changes the features (the noise draw)
    takes: tuple[str, ...]  # the entry keys it reads besides name and kind


def encoder_step(entry: ModelEntry, s: Split, folder: Path, region: Region) -> Step:
    argv = ["--model", entry.model, *(["--ckpt", str(entry.weights)] if entry.weights else [])]
    argv += ["--random-init"] if entry.random else []
    argv += [*data_args(s), "-b", _joined(entry.b or ("all",)), "--pool", _joined(entry.pool or ("1",))]
    return _command_step("run", [*argv, *entry.args], s, folder)


KINDS: dict[str, Kind] = {
    "run": Kind(run_step, True, ("model", "weights", "random", "t", "b", "pool", "args")),
    "pixels": Kind(pixels_step, False, ("args",)),
    "bigan": Kind(_network_step("bigan-features"), False, ("weights", "b", "pool", "args")),
    "classifier": Kind(_network_step("classifier-layers"), False, ("weights", "b", "pool", "args")),
    "encoder": Kind(encoder_step, False, ("model", "weights", "random", "b", "pool", "args")),
}


def check_model(entry: ModelEntry, where: str = "models") -> None:
    """An unknown kind or model, or a key the kind does not read: one line with the choices."""
    from extract.models.families import MODELS, open_model

    if entry.kind not in KINDS:
        raise EntryError(
            f"{where}: entry {entry.name!r}: unknown kind {entry.kind!r} (kinds: {', '.join(KINDS)})"
        )
    kind = KINDS[entry.kind]
    defaults = ModelEntry(name=entry.name, kind=entry.kind)
    for key in ("model", "weights", "random", "t", "b", "pool", "args"):
        if key not in kind.takes and getattr(entry, key) != getattr(defaults, key):
            raise EntryError(f"{where}: entry {entry.name!r}: kind {entry.kind} takes no {key}")
    if entry.kind == "run" and entry.model not in MODELS:
        choices = ", ".join([*MODELS, *NAMED_KINDS])
        raise EntryError(f"{where}: unknown model {entry.model!r} (models: {choices})")
    if entry.kind == "encoder" and entry.model not in MODELS and open_model(entry.model) is None:
        raise EntryError(f"{where}: entry {entry.name!r}: kind encoder takes a timm:NAME or a backbone model")
