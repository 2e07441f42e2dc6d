"""The matrix on a SLURM cluster: one job array through submitit, one task per unfinished cell.

Each task runs `run_cell` on its node and writes the cell's line, so what a task leaves behind
is read the same way as a local run's. The array's task ids are kept in `<out>/slurm/tasks.json`:
a later call with the same arguments skips the cells whose task is still queued or running
(`squeue`), collects those that finished, and resubmits only the missing and failed ones (a
task killed by `scancel` left no line, so its cell is rerun). With `wait`, the call follows the
array until none of its tasks is in the queue.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from diffprobe.matrix.cells import Cell, Plan, cell_path, run_cell


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    time: int = 60  # minutes per task
    array_parallelism: int = 64
    extra: tuple[str, ...] = ()  # more sbatch options as KEY=VALUE (e.g. account=abc, qos=high)
    poll: float = 5.0  # seconds between looks at the queue


def extra_parameters(extra: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-extra {item!r}: expected KEY=VALUE (an sbatch option without its --)")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def queued() -> set[str]:
    """The job and array-task ids in the queue (pending or running), one per task."""
    done = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"squeue failed: {done.stderr.strip() or done.returncode}")
    return set(done.stdout.split())


def _task(plan: Plan, cell: Cell, device: str | None, threads: int) -> str:
    import torch

    torch.set_num_threads(threads)
    return run_cell(plan, cell, echo=lambda _: None, device=device)["status"]


def _record_path(plan: Plan) -> Path:
    return Path(plan.out) / "slurm" / "tasks.json"


def submit(plan: Plan, cells: list[Cell], options: SlurmOptions, device: str | None) -> dict[str, str]:
    """One array for `cells`; returns cell name -> task id."""
    import submitit

    executor = submitit.SlurmExecutor(folder=Path(plan.out) / "slurm" / "%j")
    params = dict(cpus_per_task=options.cpus_per_task, time=options.time)
    params |= dict(
        array_parallelism=options.array_parallelism, additional_parameters=extra_parameters(options.extra)
    )
    params |= {"partition": options.partition} if options.partition else {}
    params |= {"gpus_per_task": options.gpus_per_task} if options.gpus_per_task else {}
    executor.update_parameters(**params)
    n = len(cells)
    jobs = executor.map_array(_task, [plan] * n, cells, [device] * n, [options.cpus_per_task] * n)
    return {c.name: j.job_id for c, j in zip(cells, jobs)}


def run_slurm(
    plan: Plan,
    todo: list[Cell],
    options: SlurmOptions,
    device: str | None,
    wait: bool,
    echo: Callable[[str], None],
    progress: bool = True,
) -> None:
    record_path = _record_path(plan)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    live = queued()
    running = [c for c in todo if record.get(c.name) in live]
    fresh = [c for c in todo if record.get(c.name) not in live]
    if running:
        echo(f"slurm: {len(running)} cells still queued or running from an earlier call")
    if fresh:
        record |= submit(plan, fresh, options, device)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1) + "\n")
        echo(f"slurm: submitted {len(fresh)} cells as array {record[fresh[0].name].split('_')[0]}")
    if not wait:
        echo(
            "slurm: not waiting; the same command again collects what finished and resubmits what is missing"
        )
        return
    _follow(plan, todo, record, options.poll, progress)


def _follow(plan: Plan, cells: list[Cell], record: dict[str, str], poll: float, progress: bool) -> None:
    from tqdm import tqdm

    ids = {record[c.name] for c in cells}
    with tqdm(total=len(cells), unit="cell", desc="matrix (slurm)", disable=not progress) as bar:
        while True:
            left = ids & queued()
            ended = sum(1 for c in cells if record[c.name] not in left and cell_path(plan, c).is_file())
            bar.n = max(bar.n, ended)
            bar.refresh()
            if not left:
                return
            time.sleep(poll)
