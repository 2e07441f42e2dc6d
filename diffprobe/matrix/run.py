"""Run a matrix: every (model, dataset, seed) cell not yet finished, through an executor, then
gather the cells' lines into `results.jsonl` and the leaderboard.

Executors (a registry): `local` runs the cells in this process one after another, or `jobs` at
a time in worker processes (each with its share of the CPU threads). A rerun with the same
arguments skips every finished cell and reruns the missing and failed ones.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Callable

from diffprobe.matrix.cells import Cell, Plan, cell_path, finished, run_cell
from diffprobe.matrix.entries import DatasetEntry, ModelEntry, unique
from diffprobe.matrix.kinds import check_model


@dataclass(frozen=True)
class MatrixConfig:
    models: tuple[ModelEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    plan: Plan
    seeds: tuple[int, ...] = (0,)
    executor: str = "local"
    jobs: int = 1
    device: str | None = None
    reference: str | None = None  # the leaderboard's reference model (default: the first)
    progress: bool = True


def cells_of(cfg: MatrixConfig) -> list[Cell]:
    """Every cell, models x datasets x seeds, in that order; bad entries fail here, before any work."""
    from extract.data.registry import DATASETS

    models, datasets = unique(list(cfg.models), "model"), unique(list(cfg.datasets), "dataset")
    for m in models:
        check_model(m)
    for d in datasets:
        if d.data not in DATASETS:
            raise ValueError(
                f"dataset {d.name!r}: unknown dataset {d.data!r} (datasets: {', '.join(DATASETS)})"
            )
    if not cfg.seeds:
        raise ValueError("give at least one seed")
    return [Cell(m, d, s) for m in models for d in datasets for s in cfg.seeds]


def _threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _worker(plan: Plan, cell: Cell, device: str | None, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return run_cell(plan, cell, echo=lambda _: None, device=device)


def run_local(cfg: MatrixConfig, todo: list[Cell], echo: Callable[[str], None]) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="cell", disable=not cfg.progress or not todo, desc="matrix")
    lines = []
    try:
        if cfg.jobs <= 1:
            for cell in todo:
                bar.set_postfix_str(cell.name)
                lines.append(run_cell(cfg.plan, cell, echo=echo, device=cfg.device))
                bar.update()
            return lines
        context = get_context("spawn")
        with ProcessPoolExecutor(cfg.jobs, mp_context=context) as pool:
            futures = [pool.submit(_worker, cfg.plan, c, cfg.device, _threads(cfg.jobs)) for c in todo]
            for future in as_completed(futures):
                lines.append(future.result())
                echo(f"cell {lines[-1]['cell']}: {lines[-1]['status']}")
                bar.update()
        return lines
    finally:
        bar.close()


EXECUTORS: dict[str, Callable[[MatrixConfig, list[Cell], Callable[[str], None]], list[dict]]] = {
    "local": run_local,
}


@dataclass(frozen=True)
class Outcome:
    cells: int
    ran: int
    skipped: int
    failed: list[str]
    lines: list[dict]


def gather(cfg: MatrixConfig, cells: list[Cell]) -> list[dict]:
    """Every cell's line on disk, in matrix order (a cell not yet run has none)."""
    lines = []
    for cell in cells:
        path = cell_path(cfg.plan, cell)
        if path.is_file():
            lines.append(json.loads(path.read_text()))
    return lines


def run_matrix(cfg: MatrixConfig, echo: Callable[[str], None] = print) -> Outcome:
    if cfg.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {cfg.executor!r} (executors: {', '.join(EXECUTORS)})")
    if cfg.jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {cfg.jobs}")
    cells = cells_of(cfg)
    todo = [c for c in cells if not finished(cfg.plan, c)]
    echo(f"matrix: {len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run")
    EXECUTORS[cfg.executor](cfg, todo, echo)
    lines = gather(cfg, cells)
    out = cfg.plan.out
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".results.jsonl.tmp"
    tmp.write_text("".join(json.dumps(line, sort_keys=True, default=str) + "\n" for line in lines))
    os.replace(tmp, out / "results.jsonl")
    failed = [line["cell"] for line in lines if line.get("status") != "done"]
    return Outcome(len(cells), len(todo), len(cells) - len(todo), failed, lines)
