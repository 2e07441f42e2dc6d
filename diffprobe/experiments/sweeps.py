"""Sweeps: the model card's sweep over blocks, t and pool (sweep-demo), its full maps at every t
(sweep-full), and the BiGAN baseline over its training (bigan-curve)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from diffprobe.experiments.builders import extraction, store_folder, train_test
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings, defaults
from diffprobe.experiments.steps import Command, Extract
from diffprobe.experiments.stores import made, pixel_path
from diffprobe.experiments.tables import QUIET, BiganGrid, bigan_features, pixel_store

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


@experiment("sweep-full", cls=SweepGrid)
def sweep_full(s: SweepGrid) -> Steps:
    """the sweep's full feature maps of every block at every t in SWEEP_T (sweep-demo has pools
    1, 2 and 4 of every block, and full maps of the 8x8 blocks at t=10 only), for the demo model
    or, with RANDOM=1, its random-weight control, on the sweep's SWEEP_N training and
    SWEEP_TEST_N test images: one linear probe per t, then the validation-best member by pool and
    by block over this grid and sweep-demo's together. This is the random control searched over
    its own grid: its best point (chosen on validation) is what make demo-table reports it at
    (RANDOM_T, RANDOM_B, RANDOM_POOL). About 0.6 MB a row: 3.2 GB of stores per t."""
    grids = [Grid((t,), ("all",), ("full",), False) for t in s.sweep_t]
    for split, n in subsets(s):
        for grid in grids:
            step = sweep_extraction(s, grid, split, n)
            if not made(step.cfg.store.out):
                yield step
    name = "sweep-random" if s.random else "sweep"
    for grid in grids:
        if not made(s.results / f"{name}-full-all-t{grid.t[0]}.json"):
            yield sweep_probe(s, grid, f"{name}-full-all-t{grid.t[0]}")
    runs = ["--results", f"grid={s.results}/{name}-full-all-t*.json"]
    pooled = s.results / f"{name}-pooled.json"  # sweep-demo's pools 1, 2, 4 of every block, when run
    runs += ["--results", f"grid={pooled}"] if pooled.exists() else []
    yield Command("analysis", ("best", *runs, "--by", "pool"))
    yield Command("analysis", ("best", *runs, "--by", "b", "--csv", f"evidence/{name}-full-grid.members.csv"))


# ----------------------------------------------------------------------------------- bigan-curve
@dataclass(frozen=True)
class CurveSettings(BiganGrid):
    """bigan-curve's own: the train-bigan run and its snapshots, the subsets, where it writes."""

    bigan_run: Path
    bigan_steps: tuple[int, ...]
    bigan_ckpts: tuple[Path, ...]
    bigan_curve_n: int
    bigan_curve_gen_n: int
    bigan_curve_dir: Path


def snapshots(s: CurveSettings) -> list[Path]:
    """BIGAN_CKPTS, else the run's snapshot at each of BIGAN_STEPS; only those that exist."""
    given = s.bigan_ckpts or tuple(s.bigan_run / "snapshots" / f"bigan-step{n}.pt" for n in s.bigan_steps)
    return [path for path in given if path.exists()]


def curve_results(s: CurveSettings) -> Path:
    """RESULTS when given, else a folder of the curve's own."""
    return s.results if s.results != defaults().results else s.bigan_curve_dir / "results"


def curve_stores(s: CurveSettings, ckpt: Path) -> tuple[Path, Path]:
    cache = s.bigan_curve_dir / "cache"
    return cache / f"{ckpt.stem}_train_n{s.bigan_curve_n}.zarr", cache / f"{ckpt.stem}_test.zarr"


def curve_probe(s: CurveSettings, ckpt: Path, stores: tuple[Path, Path]) -> Steps:
    """A snapshot's linear probe over its own grid, unless its results exist."""
    results, (train, test) = curve_results(s), stores
    if not made(results / f"{ckpt.stem}-linear.json"):
        argv = ("train", "--train", str(train), "--test", str(test), "--head", "linear", *GRID)
        options = ("--epochs", "10", "--results", str(results), "--no-progress")
        yield Command("probe", (*argv, *options, "--name", f"{ckpt.stem}-linear"))


@experiment("bigan-curve", cls=CurveSettings)
def bigan_curve(s: CurveSettings) -> Steps:
    """the BiGAN baseline over training: for each snapshot of a train-bigan run (BIGAN_RUN, kept
    with --keep-every 2000; every 4,000 steps of them) that exists, its encoder probed over its
    own grid (every stage, pools 1, 2, 4 and full where the map is that large; linear head, lr
    1e-3, 3e-3, 1e-2, 10 epochs, chosen on a 10% validation carve of BIGAN_CURVE_N training
    images; all 10,000 test images), and the FD, precision and recall of BIGAN_CURVE_GEN_N of its
    samples against the test split in the classifier's features. Then one table and one figure
    over the snapshots in order. The snapshot to ship is the one with the best validation top-1 (a
    tie keeps the longer-trained one), the rule the demo U-Net's continued training follows (make
    demo-curve). Steps are skipped when their output exists, so it resumes."""
    results, (train, test) = curve_results(s), train_test(s)
    stores = {ckpt: curve_stores(s, ckpt) for ckpt in snapshots(s)}
    for ckpt, (out, _) in stores.items():
        if not made(out):
            yield bigan_features(s, ckpt, train, s.bigan_curve_n, out)
    for ckpt, (_, out) in stores.items():
        if not made(out):
            yield bigan_features(s, ckpt, test, None, out)
    for ckpt, pair in stores.items():
        yield from curve_probe(s, ckpt, pair)
    samples = {ckpt: s.bigan_curve_dir / "samples" / ckpt.stem for ckpt in stores}
    for ckpt, folder in samples.items():
        argv = ("bigan-sample", "--weights", str(ckpt), "--n", str(s.bigan_curve_gen_n), "--seed", "0")
        yield Command("extract", (*argv, "--out", str(folder)))
    for ckpt, folder in samples.items():
        fd = results / f"{ckpt.stem}-fd.json"
        if not made(fd):
            argv = ("fid", "--data", s.data, "--split", test, "--features", CLASSIFIER, "--fake", str(folder))
            yield Command("analysis", (*argv, "--no-progress", "--out", str(fd)))
    title = "BiGAN over training: linear probe of its encoder (own grid) and FD"
    argv = ("table", "--rows-from", f"{results}/{{row}}-{{head}}.json", "--head", "linear")
    argv += ("--fd-from", f"{results}/{{row}}-fd.json", "--plot", f"{results}/curve.png", "--title", title)
    yield Command("analysis", (*argv, "--out", f"{results}/curve.md"))
    # a tie keeps the longer-trained snapshot
    chosen = ("--ties", "last", "--name", "chosen", "--out", str(results))
    yield Command("probe", ("select", "--results", f"{results}/bigan-step*-linear.json", *chosen))
