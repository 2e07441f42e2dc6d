"""How a documented number is written, and the evidence files it is read from.

One convention per label, so that "+-" means one thing everywhere:
- `mean_sd`: the mean over seeds +- their sample standard deviation, labelled "over n seeds";
- `interval`: a difference with its 95% interval, always as `[lo, hi]`, never as +-;
- `one_run`: a single run's value, labelled as one run.
Readers take a folder (the repository root) and a path inside it, so tests can point them at a copy.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

# two-sided 97.5% quantiles of Student's t by degrees of freedom, for seed-level intervals
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Stat:
    """Values over seeds (or one run)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def sd(self) -> float:
        if self.n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    def text(self) -> str:
        """`92.33 +- 0.25` over seeds, `92.58` for one run; `label()` says which."""
        return f"{self.mean:.2f} +- {self.sd:.2f}" if self.n > 1 else f"{self.mean:.2f}"

    def label(self) -> str:
        return f"mean +- sd over {self.n} seeds" if self.n > 1 else "one run"

    def labelled(self) -> str:
        return f"{self.text()} ({self.label()})"

    def t_interval(self) -> tuple[float, float]:
        """The mean's two-sided 95% t interval over the seeds."""
        half = T975[self.n - 1] * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half


def signed(x: float) -> str:
    return f"{x:+.2f}"


def interval(points: float, low: float, high: float) -> str:
    """A difference and its 95% interval: `-1.95 [-2.37, -1.53]`."""
    return f"{signed(points)} [{signed(low)}, {signed(high)}]"


def interval_labelled(d: dict) -> str:
    """An `analysis diff` result: the difference, its 95% interval, what the interval covers."""
    a, b = len(d["a_runs"]), len(d["b_runs"])
    runs = "one run each" if a == b == 1 else f"{a} vs {b} runs"
    return (
        f"{interval(d['points'], d['low'], d['high'])} (95% paired-bootstrap interval over "
        f"{d['rows']:,} test images; {runs})"
    )


def one_run(x: float) -> str:
    return f"{x:.2f} (one run)"


def read_json(root: Path, path: str) -> dict:
    file = root / path
    if not file.is_file():
        raise FileNotFoundError(f"evidence file missing: {path}")
    return json.loads(file.read_text())


def read_csv(root: Path, path: str) -> list[dict]:
    file = root / path
    if not file.is_file():
        raise FileNotFoundError(f"evidence file missing: {path}")
    with file.open(newline="") as f:
        return list(csv.DictReader(f))


def row(rows: list[dict], column: str, value: str) -> dict:
    """The one row whose `column` is `value`; an error names the values there are."""
    found = [r for r in rows if r[column] == value]
    if len(found) != 1:
        raise ValueError(
            f"{column}={value!r}: {len(found)} rows; there are {sorted({r[column] for r in rows})}"
        )
    return found[0]


def best_member(members: list[dict]) -> dict:
    """The validation-best member; a tie keeps the first in the file's order (as `analysis best`)."""
    if not members:
        raise ValueError("no members to choose from")
    top = max(float(m["val_top1"]) for m in members)
    return next(m for m in members if float(m["val_top1"]) == top)


def blocks_text(bs) -> str:
    """Block numbers as short ranges: 7-12, 28-31."""
    nums = sorted({int(b) for b in bs})
    parts, start = [], nums[0]
    for prev, cur in zip(nums, nums[1:] + [None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(parts)


def grid_text(config: dict) -> str:
    """A probe run's head grid: lrs, weight decays and epochs from its results file's config."""
    lrs = ", ".join(f"{x:g}" for x in config["lrs"])
    wds = config["wds"]
    wd = f" x wd {{{', '.join(f'{x:g}' for x in wds)}}}" if len(wds) > 1 else ""
    return f"lr {{{lrs}}}{wd}, {config['training']['epochs']} epochs"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
