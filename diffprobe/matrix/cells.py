"""One cell of a matrix, (model, dataset, seed): its stores, its heads, and its line of results.

A cell extracts what is missing (a store already made with the same key is reused), trains the
linear grid over the cell's points with selection on validation (carved from the training
split), then, at the chosen point, a kNN classifier and an attention head if asked. It writes
`<out>/cells/<cell>.json`: the cell, its key, the chosen point, validation and test top-1 and
top-5, each option's value and provenance; a failure writes its error and log path instead.

The key is a digest of what changes a result and nothing else: the model entry (with its
weights file's SHA-256), the dataset entry, the points, the limit, the head plan and the seed.
Device, batch size, workers and the number of processes are not in it, so a rerun on other
hardware skips the finished cells.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from diffprobe.experiments.stores import made
from extract.store.location import store_location
from diffprobe.matrix.entries import DatasetEntry, ModelEntry, Region
from diffprobe.experiments.steps import Extract
from diffprobe.matrix.kinds import KINDS, Split, Step, points

FORMAT = "diffprobe-matrix-cell"


@dataclass(frozen=True)
class HeadPlan:
    """What each cell trains: the linear grid (lrs x wds over the points, the diffprobe recipe's
    grid), and the extra heads at the chosen point (the attention head with the recipe's own
    defaults). Everything here is in the cell key."""

    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    wds: tuple[float, ...] = (0.0, 0.05)
    epochs: int = 20
    batch_size: int = 256
    val_fraction: float = 0.1
    knn: tuple[int, ...] = (10, 20)
    attention: bool = False


@dataclass(frozen=True)
class Cell:
    model: ModelEntry
    dataset: DatasetEntry
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model.name}__{self.dataset.name}__s{self.seed}"


@dataclass(frozen=True)
class Plan:
    """What every cell of a matrix shares: where stores and results go, the default region and
    limit, and the heads."""

    out: Path
    stores: Path
    region: Region = Region()
    limit: int | None = None
    heads: HeadPlan = HeadPlan()
    # extraction processes per cell: above 1, a cell's extraction runs under torchrun with this
    # many (one per GPU of its task); the stores are the same bit for bit, so no cell key has it
    procs: int = 1

    def __post_init__(self) -> None:
        if self.procs < 1:
            raise ValueError(f"processes per cell must be at least 1, got {self.procs}")


def cell_path(plan: Plan, cell: Cell) -> Path:
    return Path(plan.out) / "cells" / f"{cell.name}.json"


_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """A file's SHA-256, computed once per file version in this process."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _weights_file(entry: ModelEntry) -> Path | None:
    """The weights a run reads: the entry's, else a preset's shipped checkpoint (random: none)."""
    if entry.weights is not None or entry.kind != "run" or entry.random:
        return entry.weights
    from extract.models.families import MODELS

    shipped = getattr(MODELS[entry.model].preset, "checkpoint", "")
    return Path(shipped) if shipped else None


def _weights_identity(entry: ModelEntry) -> dict:
    weights = _weights_file(entry)
    if weights is None:
        return {"weights": "default"}
    if not Path(weights).is_file():
        return {"weights": str(weights), "sha256": None}
    return {"weights": Path(weights).name, "sha256": file_sha256(weights)}


def splits_of(dataset: DatasetEntry) -> tuple[str, str]:
    """The training and test splits: the entry's, else train (or trainval), then test (or val)."""
    from extract.data.registry import DATASETS

    if dataset.splits:
        if len(dataset.splits) != 2:
            raise ValueError(f"dataset {dataset.name!r}: splits takes a training and a test split")
        return dataset.splits[0], dataset.splits[1]
    known = DATASETS[dataset.data].splits
    train = next((s for s in ("train", "trainval") if s in known), "train")
    test = next((s for s in ("test", "val") if s in known), "test")
    return train, test


def cell_key(plan: Plan, cell: Cell) -> str:
    entry = cell.model
    kind = KINDS[entry.kind]
    model = {
        k: v
        for k, v in dataclasses.asdict(entry).items()
        if k in ("kind", "model", "random", "args") or k in ("b", "pool") and entry.kind != "run"
    }
    if entry.kind == "run":
        model["points"] = points(entry, plan.region)
    dataset = dataclasses.asdict(cell.dataset) | {"root": str(cell.dataset.root or "")}
    dataset.pop("name")
    dataset["limit"] = cell.dataset.limit or plan.limit
    identity = {
        "model": model | _weights_identity(entry),
        "dataset": dataset,
        "heads": dataclasses.asdict(plan.heads),
        "seed": cell.seed if kind.seeded else None,
        "head_seed": cell.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished(plan: Plan, cell: Cell) -> bool:
    """Whether the cell's results are on disk, done, for this very key."""
    path = cell_path(plan, cell)
    try:
        line = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return line.get("status") == "done" and line.get("key") == cell_key(plan, cell)


def write_atomic(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, path)


class Log:
    """A cell's log file; each line also goes to `echo`. As a stream (the cell's stderr) it
    writes through to `stream` and keeps the last `error: ...` line a step printed."""

    def __init__(self, path: Path, echo, stream=None):
        self.path, self.echo, self.stream = path, echo, stream
        self.last_error = ""
        self.stage = "stores"  # what the cell is doing: its stores, then its heads
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, text: str) -> None:
        self.echo(text)
        with self.path.open("a") as f:
            f.write(text + "\n")

    def write(self, text: str) -> int:
        if self.stream is not None:
            self.stream.write(text)
        with self.path.open("a") as f:
            f.write(text)
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        self.last_error = errors[-1][len("error: ") :] if errors else self.last_error
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


def run_cell(plan: Plan, cell: Cell, echo=print, device: str | None = None) -> dict:
    """Run one cell (its stores, then its heads) and write its line; a failure is recorded, not
    raised, so the other cells go on. Returns the line."""
    log = Log(Path(plan.out) / "logs" / f"{cell.name}.log", echo, sys.stderr)
    started = time.time()
    base = {"format": FORMAT, "cell": cell.name, "model": cell.model.name, "dataset": cell.dataset.name}
    base |= {"seed": cell.seed, "key": cell_key(plan, cell), "log": str(log.path)}
    try:
        with contextlib.redirect_stderr(log):
            line = base | {"status": "done"} | _run(plan, cell, log, device)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - a failed cell records why; the matrix goes on
        message = str(e) if not isinstance(e, SystemExit) else f"a step ended with exit status {e.code}"
        message = f"{message}: {log.last_error}" if isinstance(e, SystemExit) and log.last_error else message
        log(f"cell {cell.name} failed: {type(e).__name__}: {message}")
        with log.path.open("a") as f:
            f.write(traceback.format_exc())
        line = base | {"status": "failed", "error": f"{type(e).__name__}: {message}"}
        if log.stage == "stores":  # its extraction failed: the data may be missing or malformed
            root = f" --data-root {cell.dataset.root}" if cell.dataset.root else ""
            line["hint"] = (
                f"check the dataset with: diffprobe extract check-data --data {cell.dataset.data}{root}"
            )
            log(line["hint"])
    line["seconds"] = round(time.time() - started, 1)
    write_atomic(cell_path(plan, cell), line)
    return line


def store_steps(plan: Plan, cell: Cell) -> dict[str, tuple[Path, Step]]:
    """role (train, test) -> the store the cell reads and the step that makes it."""
    kind = KINDS[cell.model.kind]
    limit = cell.dataset.limit or plan.limit
    steps = {}
    for role, split in zip(("train", "test"), splits_of(cell.dataset)):
        at = Split(cell.dataset, split, limit, cell.seed)
        step = kind.step(cell.model, at, store_location(plan.stores), plan.region)
        out = step.cfg.store.out if isinstance(step, Extract) else store_location(step.argv[-1])
        steps[role] = (out, step)
    return steps


def _stores(plan: Plan, cell: Cell, log) -> dict[str, Path]:
    stores = {}
    for role, (out, step) in store_steps(plan, cell).items():
        if made(out):
            log(f"reusing {out}")
        elif plan.procs > 1 and isinstance(step, Extract):
            step.run_distributed(log, plan.procs)
        else:
            step.run(log)
        stores[role] = out
    return stores


def _run(plan: Plan, cell: Cell, log, device: str | None) -> dict:
    from diffprobe.matrix.summary import summarize
    from probe.config import ProbeConfig, TrainSettings
    from probe.recipes import DIFFPROBE_HEADS
    from probe.run import probe

    stores = _stores(plan, cell, log)
    log.stage = "heads"
    heads = plan.heads
    training = TrainSettings(epochs=heads.epochs, batch_size=heads.batch_size, seed=cell.seed)
    folder = Path(plan.out) / "runs"
    common = dict(train=stores["train"], test=stores["test"], results=folder, progress=False, device=device)
    common |= dict(val_fraction=heads.val_fraction, training=training)
    linear = probe(ProbeConfig(heads=("linear",), lrs=heads.lrs, wds=heads.wds, name=cell.name, **common))
    chosen = folder / f"{cell.name}.json"
    extra = {}
    if heads.knn:
        extra["knn"] = probe(
            ProbeConfig(
                heads=("knn",), knn_k=heads.knn, features_from=chosen, name=f"{cell.name}-knn", **common
            )
        )
    if heads.attention:
        own = DIFFPROBE_HEADS["attention"]
        attention = ProbeConfig(
            heads=("attention",),
            lrs=own["lrs"],
            wds=own["wds"],
            head_options=own["head_options"],
            features_from=chosen,
            name=f"{cell.name}-attention",
            **(common | {"training": dataclasses.replace(training, epochs=own["epochs"])}),
        )
        extra["attention"] = probe(attention)
    return summarize(cell, stores, linear, extra, folder)
