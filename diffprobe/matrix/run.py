"""Run a matrix: every (model, dataset, seed) cell not yet finished, through an executor, then
gather the cells' lines into `results.jsonl` and the leaderboard.

Executors (a registry): `local` runs the cells in this process one after another, or `jobs` at
a time in worker processes (each with its share of the CPU threads); `slurm` submits one job
array through submitit (diffprobe.matrix.slurm). A rerun with the same arguments skips every
finished cell and reruns the missing and failed ones.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Callable

from diffprobe.matrix.cells import Cell, Plan, cell_key, cell_path, finished, run_cell
from diffprobe.matrix.entries import DatasetEntry, ModelEntry, unique
from diffprobe.matrix.kinds import check_model
from diffprobe.matrix.slurm import SlurmOptions, run_slurm


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
    slurm: SlurmOptions = SlurmOptions()
    wait: bool = True  # slurm: follow the array until it ends (else submit and return)


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


def bound_jobs(jobs: int, cores: int, gpus: int) -> int:
    """Cells at once: at most one per core, and one per GPU where there are GPUs."""
    return max(1, min(jobs, cores, gpus or jobs))


def _claim_gpu(free) -> None:
    """A worker's initializer: take one GPU for the worker's life (before torch is imported)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(free.get())


def _worker(plan: Plan, cell: Cell, device: str | None, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return run_cell(plan, cell, echo=lambda _: None, device=device)


def run_local(cfg: MatrixConfig, todo: list[Cell], echo: Callable[[str], None]) -> list[dict]:
    import torch
    from tqdm import tqdm

    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if cfg.device in (None, "cuda") else 0
    jobs = bound_jobs(cfg.jobs, cores, gpus)
    bar = tqdm(total=len(todo), unit="cell", disable=not cfg.progress or not todo, desc="matrix")
    lines = []
    try:
        if jobs <= 1:
            for cell in todo:
                bar.set_postfix_str(cell.name)
                lines.append(run_cell(cfg.plan, cell, echo=echo, device=cfg.device))
                bar.update()
            return lines
        context = get_context("spawn")
        init = {}
        if gpus:
            free = context.Queue()
            for i in range(jobs):
                free.put(i)
            init = {"initializer": _claim_gpu, "initargs": (free,)}
        with ProcessPoolExecutor(jobs, mp_context=context, **init) as pool:
            threads = max(1, cores // jobs)
            futures = [pool.submit(_worker, cfg.plan, c, cfg.device, threads) for c in todo]
            for future in as_completed(futures):
                lines.append(future.result())
                echo(f"cell {lines[-1]['cell']}: {lines[-1]['status']}")
                bar.update()
        return lines
    finally:
        bar.close()


def run_on_slurm(cfg: MatrixConfig, todo: list[Cell], echo: Callable[[str], None]) -> None:
    if todo:
        run_slurm(cfg.plan, todo, cfg.slurm, cfg.device, cfg.wait, echo, cfg.progress)


EXECUTORS: dict[str, Callable[[MatrixConfig, list[Cell], Callable[[str], None]], object]] = {
    "local": run_local,
    "slurm": run_on_slurm,
}


@dataclass(frozen=True)
class Outcome:
    cells: int
    ran: int  # cells run (or submitted) by this call
    skipped: int  # finished before it
    failed: list[str]
    missing: list[str]  # cells with no line yet (not run, still queued, or killed)
    lines: list[dict]


def gather(cfg: MatrixConfig, cells: list[Cell]) -> list[dict]:
    """Every cell's line on disk, in matrix order (a cell not yet run has none)."""
    lines = []
    for cell in cells:
        path = cell_path(cfg.plan, cell)
        line = json.loads(path.read_text()) if path.is_file() else {}
        if line.get("key") == cell_key(cfg.plan, cell):  # not a line left by other arguments
            lines.append(line)
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
    have = {line["cell"] for line in lines}
    missing = [c.name for c in cells if c.name not in have]
    return Outcome(len(cells), len(todo), len(cells) - len(todo), failed, missing, lines)
