"""The matrix: models x datasets (x seeds) in one command, into one leaderboard (`make matrix`,
`make demo-matrix`). The cells' work is diffprobe.matrix's; this builds its config from the
settings and shows or runs it as one step."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diffprobe.experiments.builders import store_folder
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings
from diffprobe.experiments.steps import Echo
from extract.store.location import store_location


@dataclass(frozen=True)
class MatrixSettings(Settings):
    """The settings, and the matrix's own: its entries, executor, extra heads and outputs."""

    models: str
    datasets: str
    executor: Literal["local", "slurm"]
    jobs: int
    partition: str
    gpus_per_task: int
    cpus_per_task: int
    procs_per_cell: int
    slurm_time: int
    array_parallelism: int
    slurm_extra: tuple[str, ...]
    wait: bool
    knn: tuple[int, ...]
    attention: bool
    reference: str
    matrix_out: Path
    board_out: Path | None


@dataclass(frozen=True)
class RunMatrix:
    """Run every unfinished cell, then write results.jsonl and the leaderboard."""

    settings: MatrixSettings

    def config(self):
        from diffprobe.matrix.cells import HeadPlan, Plan
        from diffprobe.matrix.entries import Region, datasets_from, models_from
        from diffprobe.matrix.run import MatrixConfig
        from diffprobe.matrix.slurm import SlurmOptions

        s = self.settings
        region = Region(s.t, s.b, s.pool)
        heads = HeadPlan(knn=s.knn, attention=s.attention)
        plan = Plan(
            Path(s.matrix_out), store_location(store_folder(s)), region, s.limit, heads, s.procs_per_cell
        )
        models, datasets = models_from(s.models), datasets_from(s.datasets)
        slurm = SlurmOptions(
            s.partition or None,
            s.gpus_per_task,
            s.cpus_per_task,
            s.slurm_time,
            s.array_parallelism,
            s.slurm_extra,
        )
        return MatrixConfig(
            tuple(models),
            tuple(datasets),
            plan,
            s.seeds,
            s.executor,
            s.jobs,
            reference=s.reference or None,
            slurm=slurm,
            wait=s.wait,
        )

    def board(self) -> Path:
        return Path(self.settings.board_out or Path(self.settings.matrix_out) / "leaderboard")

    def show(self, echo: Echo) -> None:
        from diffprobe.experiments.stores import made
        from diffprobe.matrix.cells import finished, store_steps
        from diffprobe.matrix.run import cells_of

        cfg = self.config()
        for cell in cells_of(cfg):
            if finished(cfg.plan, cell):
                echo(f"cell {cell.name}: finished")
                continue
            echo(f"cell {cell.name}: to run")
            for out, step in store_steps(cfg.plan, cell).values():
                if not made(out):
                    step.show(echo)
        echo(f"leaderboard -> {self.board()}")

    def run(self, echo: Echo) -> None:
        from analysis.leaderboard import write_leaderboard
        from diffprobe.matrix.run import run_matrix

        cfg = self.config()
        outcome = run_matrix(cfg, echo)
        written = write_leaderboard(outcome.lines, self.board(), reference=cfg.reference)
        # the board's folder holds the lines it was made from
        written.append(Path(shutil.copy2(cfg.plan.out / "results.jsonl", self.board() / "results.jsonl")))
        echo(
            f"matrix: {outcome.ran} cells run, {outcome.skipped} finished before; written: "
            + ", ".join(map(str, written))
        )
        if outcome.missing:
            echo(
                f"cells not finished yet: {', '.join(outcome.missing)} (the same command again collects them)"
            )
        if outcome.failed:
            echo(f"failed cells (their logs are in {cfg.plan.out / 'logs'}): {', '.join(outcome.failed)}")
        if outcome.failed or (outcome.missing and cfg.wait):
            raise SystemExit(1)


@experiment("matrix", cls=MatrixSettings)
def matrix(s: MatrixSettings) -> Steps:
    """models x datasets (x SEEDS): each cell's stores, its linear grid chosen on validation, kNN
    (and an attention head) at the chosen point; one line per cell and a leaderboard (MODELS=
    DATASETS= as comma lists or TOML files; a rerun runs only the missing and failed cells)."""
    yield RunMatrix(s)


@experiment("demo-matrix", cls=MatrixSettings)
def demo_matrix(s: MatrixSettings) -> Steps:
    """the demo's matrix on Fashion-MNIST and digits: the demo U-Net at its best point and at
    t=150/b=24, its random-weight control, the BiGAN encoder, the classifier's layers and pixels;
    its leaderboard goes to evidence/matrix/."""
    yield RunMatrix(s)
