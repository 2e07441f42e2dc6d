"""Sweeps: the model card's sweep over blocks, t and pool (sweep-demo), its full maps at every t
(sweep-full), and the BiGAN baseline over its training (bigan-curve)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from diffprobe.experiments.builders import extraction, store_folder, train_test
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings
from diffprobe.experiments.steps import Command, Extract
from diffprobe.experiments.stores import pixel_path
from diffprobe.experiments.tables import pixel_store

QUIET = "--micro-batch 64 --no-progress"
# every sweep probe: linear heads over an lr grid, chosen on the validation carve
GRID = ("--lr", "1e-3,3e-3,1e-2", "--wd", "0")
PROBE = ("--buffer-mb", "9000", "--epochs", "10", "--no-progress")
CLASSIFIER = "classifier:extract/weights/fmnist-classifier.pt"


@dataclass(frozen=True)
class SweepGrid(Settings):
    """The settings, and the sweep's timesteps and its training and test subsets."""

    sweep_t: tuple[int, ...]
    sweep_n: int
    sweep_test_n: int


@dataclass(frozen=True)
class SweepSettings(SweepGrid):
    """sweep-demo's pools of every block, and the blocks whose full maps it also keeps."""

    sweep_pools: tuple[str, ...]
    sweep_full_t: tuple[int, ...]
    sweep_full_b: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """One part of a sweep: where, and which stores; `pooled`: every block, small maps left out."""

    t: tuple[int, ...]
    b: tuple[str, ...]
    pool: tuple[str, ...]
    pooled: bool


def subsets(s: SweepGrid) -> tuple[tuple[str, int], tuple[str, int]]:
    """(split, limit) of the sweep's training and test images."""
    train, test = train_test(s)
    return (train, s.sweep_n), (test, s.sweep_test_n)


def sweep_extraction(s: SweepGrid, grid: Grid, split: str, limit: int) -> Extract:
    args = f"{QUIET}{' --skip-small-maps' if grid.pooled else ''}"
    return extraction(replace(s, t=grid.t, b=grid.b, pool=grid.pool, limit=limit, args=args), split)


def sweep_probe(s: SweepGrid, grid: Grid, name: str) -> Command:
    train, test = (sweep_extraction(s, grid, split, n).cfg.store.out for split, n in subsets(s))
    argv = ("train", "--train", str(train), "--test", str(test), *GRID, "--results", str(s.results))
    return Command("probe", (*argv, *PROBE, "--name", name))


@experiment("sweep-demo", cls=SweepSettings)
def sweep_demo(s: SweepSettings) -> Steps:
    """the model card's sweep: every block at t in SWEEP_T and pools 1, 2, 4 (pairs whose pool
    exceeds the block's map left out), plus the full maps of the 8x8 blocks, for the trained model
    and its random-weight control, on SWEEP_N training images (linear heads chosen on a validation
    carve) and SWEEP_TEST_N test images; then the curves and the tables"""
    grids = {
        "pooled": Grid(s.sweep_t, ("all",), s.sweep_pools, True),
        "full": Grid(s.sweep_full_t, s.sweep_full_b, ("full",), False),
    }
    # the shipped weights, or the random control; CKPT is not read
    models = {
        "sweep": replace(s, random=False, ckpt=None),
        "sweep-random": replace(s, random=True, ckpt=None),
    }
    for model in reversed(models.values()):
        for grid in grids.values():
            yield from (sweep_extraction(model, grid, split, n) for split, n in subsets(s))
    for prefix, model in models.items():
        yield from (sweep_probe(model, grid, f"{prefix}-{part}") for part, grid in grids.items())
    for split, n in subsets(s):
        yield from pixel_store(s, split, n)
    train, test = (str(pixel_path(store_folder(s), s.data, split, n)) for split, n in subsets(s))
    argv = ("train", "--train", train, "--test", test, "--head", "linear", "--head", "logreg")
    yield Command("probe", (*argv, *GRID, "--results", str(s.results), *PROBE, "--name", "sweep-pixels"))
    yield from sweep_summaries(s)


def sweep_summaries(s: SweepSettings) -> Steps:
    """The accuracy curves (into the model card's folder), the best member by pool (as CSV in
    evidence/) and by t, and the results table."""
    labels = {"sweep": "trained", "sweep-random": "random-weights"}
    runs = [
        arg
        for prefix, label in labels.items()
        for part in ("pooled", "full")
        for arg in ("--results", f"{label}={s.results}/{prefix}-{part}.json")
    ]
    title = f"{s.model}: linear probe test top-1 (each point chosen on validation)"
    yield Command(
        "analysis", ("curves", *runs, "--out", "extract/weights/accuracy_curves.png", "--title", title)
    )
    pixels = ("--results", f"pixels={s.results}/sweep-pixels.json")
    yield Command(
        "analysis", ("best", *runs, *pixels, "--by", "pool", "--csv", "evidence/demo-sweep.members.csv")
    )
    yield Command("analysis", ("best", *runs, "--by", "t"))
    yield Command("probe", ("table", "--results", str(s.results)))
