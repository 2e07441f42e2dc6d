"""Differences between probe runs with a 95% interval: a paired bootstrap over the test rows.

Each side of a comparison is one or more runs (seeds of one configuration) scored on the same
test rows. A resample draws n test rows with replacement, the same rows for every run of both
sides (that is what pairs them), and takes the difference of the two sides' mean accuracy; the
interval is the 2.5th and 97.5th percentiles of that difference over the resamples. It is the
uncertainty of the test set; the spread across seeds is reported beside it (per-run accuracies,
their mean and sample standard deviation).

The rows of each run come from its predictions file (`NAME.predictions.npz` beside
`NAME.json`, written by `probe train` with a `--test` store: `index`, `label`, `pred`), aligned
by `index`, each row's position in the dataset. numpy only.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# expand: results files from lists and globs, importable from here
from probe.tables import expand, read_results  # noqa: F401

# `-s<k>`, `-seed<k>` (or `_s<k>`, `_seed<k>`) at the end of a run's name marks a seed of one configuration
SEED_SUFFIX = re.compile(r"^(?P<config>.+?)[-_](?:s|seed)(?P<seed>\d+)$")


def configuration(name: str) -> str:
    """A run's name without its seed suffix: demo-trained-s1 -> demo-trained."""
    m = SEED_SUFFIX.match(name)
    return m.group("config") if m else name


@dataclass
class Diff:
    """A minus B, in percentage points, with its 95% paired-bootstrap interval."""

    a: str
    b: str
    points: float
    low: float
    high: float
    rows: int
    resamples: int
    seed: int
    a_runs: list[float]  # each run's test top-1 (percent)
    b_runs: list[float]
    a_mean: float
    a_std: float  # sample standard deviation across runs (0 for one run)
    b_mean: float
    b_std: float

    def side(self, which: str) -> str:
        runs, mean, std = (
            (self.a_runs, self.a_mean, self.a_std) if which == "A" else (self.b_runs, self.b_mean, self.b_std)
        )
        return (
            f"{which}: 1 run, {mean:.2f}"
            if len(runs) == 1
            else f"{which}: {len(runs)} runs, mean {mean:.2f} +- {std:.2f}"
        )

    def interval(self) -> str:
        return f"[{self.low:+.2f}, {self.high:+.2f}]"

    def line(self) -> str:
        return (
            f"{self.a} - {self.b}: {self.points:+.2f} points, 95% interval {self.interval()} "
            f"(paired bootstrap over {self.rows} test images, "
            f"{self.resamples} resamples; {self.side('A')}; {self.side('B')})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _matrix(correct, what: str) -> np.ndarray:
    m = np.asarray(correct)
    m = m[None] if m.ndim == 1 else m
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{what}: expected (runs, rows) of right/wrong, got shape {np.shape(correct)}")
    return m.astype(bool)


def paired_bootstrap(
    correct_a, correct_b, resamples: int = 10000, seed: int = 0, a: str = "A", b: str = "B"
) -> Diff:
    """correct_a (R_a, n), correct_b (R_b, n): whether each run got each test row right, the
    rows in the same order on both sides. The difference of the sides' mean accuracy with a 95%
    percentile interval; resample i draws rows `default_rng(seed).integers(0, n, n)` (the i-th
    call), the same rows for every run."""
    ma, mb = _matrix(correct_a, "A"), _matrix(correct_b, "B")
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(
            f"A and B are scored on different numbers of test rows ({ma.shape[1]} vs {mb.shape[1]})"
        )
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    n = ma.shape[1]
    # the mean over runs of each run's accuracy on resampled rows is the mean over those rows of
    # each row's share of right runs: one vector per side, so a resample is one gather
    per_row = 100.0 * (ma.mean(axis=0) - mb.mean(axis=0))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for i in range(resamples):
        stats[i] = per_row[rng.integers(0, n, n)].mean()
    low, high = np.percentile(stats, [2.5, 97.5])
    acc_a, acc_b = 100.0 * ma.mean(axis=1), 100.0 * mb.mean(axis=1)
    return Diff(
        a,
        b,
        float(acc_a.mean() - acc_b.mean()),
        float(low),
        float(high),
        n,
        int(resamples),
        int(seed),
        [float(v) for v in acc_a],
        [float(v) for v in acc_b],
        float(acc_a.mean()),
        _std(acc_a),
        float(acc_b.mean()),
        _std(acc_b),
    )


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


@dataclass
class Run:
    """One probe run's test predictions, its rows sorted by dataset position."""

    name: str
    path: Path
    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    dataset: dict | None  # the test store's dataset (name, split, rows, ...)
    # the results' head record (chosen features, lr, ...)
    head: dict = field(default_factory=dict, repr=False)

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label


def load_run(path: str | Path) -> Run:
    """A results JSON and the predictions file it names; anything missing is one clear error."""
    path = Path(path)
    result = read_results(path)
    name = result.get("name", path.stem)
    test = result.get("stores", {}).get("test")
    if test is None:
        raise ValueError(f"{path}: run {name} has no test split (probe train --test STORE scores one)")
    if not result.get("predictions"):
        raise FileNotFoundError(
            f"{path}: run {name} records no per-row test predictions (written before they were kept); "
            "rerun it to compare it"
        )
    npz = path.parent / result["predictions"]
    if not npz.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found: {npz}")
    try:
        with np.load(npz) as f:
            index, label, pred = f["index"], f["label"], f["pred"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{npz}: not a predictions file (index, label, pred): {e}") from None
    if not (len(index) == len(label) == len(pred)) or len(np.unique(index)) != len(index):
        raise ValueError(f"{npz}: index, label and pred must have one entry per test row, each index once")
    order = np.argsort(index, kind="stable")
    return Run(
        name, path, index[order], label[order], pred[order], test.get("dataset"), result.get("head") or {}
    )


def _describe(dataset: dict | None) -> str:
    return (
        ", ".join(f"{k} {v}" for k, v in _source(dataset).items() if not isinstance(v, (dict, list)))
        or "unknown"
    )


# the dataset key's fields that describe which rows (and in which order), not which data
ROW_FIELDS = ("rows", "selection", "order")


def _source(dataset: dict | None) -> dict:
    return {k: v for k, v in (dataset or {}).items() if k not in ROW_FIELDS}


def check_aligned(runs: list[Run]) -> None:
    """Every run scored on the same test rows of the same dataset, or one line saying which differs."""
    first = runs[0]
    for r in runs[1:]:
        if _source(r.dataset) != _source(first.dataset):
            raise ValueError(
                f"{r.name} and {first.name} were tested on different datasets "
                f"({_describe(r.dataset)} vs {_describe(first.dataset)})"
            )
        if len(r.index) != len(first.index) or not np.array_equal(r.index, first.index):
            only = len(np.setdiff1d(r.index, first.index)) + len(np.setdiff1d(first.index, r.index))
            raise ValueError(
                f"{r.name} and {first.name} were scored on different test rows "
                f"({len(r.index)} vs {len(first.index)} rows, {only} in only one): "
                "a different test store, split or limit"
            )
        if not np.array_equal(r.label, first.label):
            differ = int((r.label != first.label).sum())
            raise ValueError(
                f"{r.name} and {first.name} give the same test rows different labels ({differ} rows)"
            )


def label_of(runs: list[Run]) -> str:
    names = list(dict.fromkeys(configuration(r.name) if len(runs) > 1 else r.name for r in runs))
    return names[0] if len(names) == 1 else "+".join(r.name for r in runs)


def compare_runs(a: list[Run], b: list[Run], resamples: int = 10000, seed: int = 0) -> Diff:
    if not a or not b:
        raise ValueError("each side needs at least one results file")
    check_aligned([*a, *b])
    return paired_bootstrap(
        np.stack([r.correct for r in a]),
        np.stack([r.correct for r in b]),
        resamples,
        seed,
        label_of(a),
        label_of(b),
    )


def compare(a_files, b_files, resamples: int = 10000, seed: int = 0) -> Diff:
    """A minus B from results files (paths, comma lists or globs); several per side are seeds."""
    return compare_runs(
        [load_run(p) for p in expand(a_files)], [load_run(p) for p in expand(b_files)], resamples, seed
    )


@dataclass
class FolderDiffs:
    """One results folder's Differences: each configuration against the first one."""

    folder: Path
    diffs: list[Diff]
    skipped: list[str]


def folder_differences(folder: Path, files: list[str], resamples: int = 10000, seed: int = 0) -> FolderDiffs:
    """files: the folder's results files (`NAME.json`) in its table's order. Runs named alike but
    for a seed suffix are seeds of one configuration; the first configuration with predictions is
    the reference, and each other configuration is compared with it (reference minus other)."""
    groups: dict[str, list[Run]] = {}
    skipped = []
    for file in dict.fromkeys(files):
        try:
            run = load_run(folder / file)
        except (OSError, ValueError) as e:
            skipped.append(f"{Path(file).stem} skipped: {e}")
            continue
        groups.setdefault(configuration(run.name), []).append(run)
    diffs: list[Diff] = []
    configs = list(groups.values())
    for other in configs[1:]:
        try:
            diffs.append(compare_runs(configs[0], other, resamples, seed))
        except ValueError as e:
            skipped.append(f"{label_of(other)} skipped: {e}")
    return FolderDiffs(folder, diffs, skipped)
