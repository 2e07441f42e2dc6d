"""A results table over seeds, in the paper's shape: one row per representation, one column per
head (test top-1: the mean over seeds, the spread across them and how many runs), optionally the
generative model's Fréchet distance, precision and recall, and each row's difference from a
reference row, per head, with a paired-bootstrap 95% interval over the test rows
(`analysis.intervals`).

A row is a label and a results-file pattern with `{head}` in it, e.g.
`diffusion=results/table/diffusion-{head}-*.json`; the files it matches for a head are that
cell's seeds. Rows can also be found on disk (`rows_from`: a pattern with `{row}` too, e.g. one
row per training checkpoint), and drawn as curves over the rows (`plot`). A cell with no file
is "not run": the table says so instead of failing, so a table can be made while some rows are
still training. numpy only.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.intervals import Diff, Run, check_aligned, compare_runs, load_run
from probe.tables import natural_key


@dataclass
class Cell:
    runs: list[str]  # results files, one per seed
    top1: list[float]  # each run's test top-1 (percent)
    points: list[str]  # each run's selected features (t/b/pool), as validation chose them

    @property
    def mean(self) -> float:
        return float(np.mean(self.top1))

    @property
    def std(self) -> float:
        return float(np.std(self.top1, ddof=1)) if len(self.top1) > 1 else 0.0

    def text(self) -> str:
        return (
            f"{self.mean:.2f} +- {self.std:.2f} ({len(self.top1)})"
            if len(self.top1) > 1
            else f"{self.mean:.2f} (1)"
        )


@dataclass
class Generation:
    fd: float
    precision: float | None
    recall: float | None
    source: str
    class_tv: float | None = None  # total variation between the samples' and real images' class shares

    def text(self) -> str:
        parts = ([] if self.precision is None else [f"P {self.precision:.2f}", f"R {self.recall:.2f}"]) + (
            [] if self.class_tv is None else [f"class TV {self.class_tv:.2f}"]
        )
        return f"{self.fd:.2f}" + (f" ({', '.join(parts)})" if parts else "")


@dataclass
class SeedTable:
    rows: list[str]
    heads: list[str]
    cells: dict[tuple[str, str], Cell]
    diffs: dict[tuple[str, str], Diff]
    generation: dict[str, Generation] = field(default_factory=dict)
    reference: str | None = None

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "heads": self.heads,
            "reference": self.reference,
            "cells": [
                {
                    "row": r,
                    "head": h,
                    "mean": c.mean,
                    "std": c.std,
                    "top1": c.top1,
                    "runs": c.runs,
                    "points": c.points,
                }
                for (r, h), c in self.cells.items()
            ],
            "differences": [{"row": r, "head": h, **d.to_dict()} for (r, h), d in self.diffs.items()],
            "generation": {r: vars(g) for r, g in self.generation.items()},
        }


def parse_rows(items) -> list[tuple[str, str]]:
    """LABEL=PATTERN items; the pattern names a head's results files with `{head}`."""
    rows = []
    for item in items:
        label, sep, pattern = str(item).rpartition("=")  # the last "=": a label may hold one (t=150)
        if not sep or not label.strip() or not pattern.strip():
            raise ValueError(
                f"--row {item!r}: give LABEL=PATTERN, "
                "e.g. 'diffusion=results/table/diffusion-{head}-*.json'"
            )
        if "{head}" not in pattern:
            raise ValueError(f"--row {item!r}: the pattern needs {{head}} where the head's name goes")
        if label.strip() in (r for r, _ in rows):
            raise ValueError(f"--row {label.strip()!r} is given twice")
        rows.append((label.strip(), pattern.strip()))
    if not rows:
        raise ValueError("give at least one --row LABEL=PATTERN")
    return rows


def rows_from(pattern: str, heads) -> list[tuple[str, str]]:
    """Rows found on disk: PATTERN holds `{row}` and `{head}`; every text that `{row}` stands for in
    an existing file (for any head) is a row, labelled by it, in natural order (step2 < step10)."""
    if "{row}" not in pattern or "{head}" not in pattern:
        raise ValueError(f"--rows-from {pattern!r}: the pattern needs both {{row}} and {{head}}")
    found = set()
    for head in heads:
        before, _, after = pattern.replace("{head}", head).partition("{row}")
        for f in glob.glob(before + "*" + after):
            found.add(f[len(before) : len(f) - len(after)] if after else f[len(before) :])
    return [(label, pattern.replace("{row}", label)) for label in sorted(found, key=natural_key)]


def generation_from(pattern: str, labels) -> list[str]:
    """LABEL=FILE items for the rows whose `{row}` in PATTERN names an existing file."""
    if "{row}" not in pattern:
        raise ValueError(f"--fd-from {pattern!r}: the pattern needs {{row}}")
    return [
        f"{label}={pattern.replace('{row}', label)}"
        for label in labels
        if Path(pattern.replace("{row}", label)).is_file()
    ]


def read_generation(item: str) -> tuple[str, Generation]:
    """LABEL=FILE: an `analysis fid` / `analysis fd` result (fd, and precision and recall when it
    has them)."""
    label, sep, path = str(item).rpartition("=")
    if not sep or not label.strip():
        raise ValueError(
            f"--fd {item!r}: give LABEL=FILE (a JSON that `analysis fid` or `analysis fd` wrote)"
        )
    p = Path(path.strip())
    if not p.is_file():
        raise FileNotFoundError(f"--fd {label.strip()}: file not found: {p}")
    try:
        data = json.loads(p.read_text())
        fd = float(data["fd"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"--fd {label.strip()}: {p} is not a Fréchet distance result (no 'fd')") from None
    get = lambda k: None if data.get(k) is None else float(data[k])  # noqa: E731
    return label.strip(), Generation(fd, get("precision"), get("recall"), str(p), get("class_tv"))


def _point(head: dict) -> str:
    """The features validation chose, from a results file's head record."""
    return str(
        head.get("feature_set")
        or "+".join(f"t{k.get('t')}/b{k.get('b')}/{k.get('pool')}" for k in head.get("features", []))
        or "?"
    )


def build_table(
    rows, heads, reference: str | None = None, generation=(), resamples: int = 10000, seed: int = 0
) -> SeedTable:
    """rows: (label, pattern) pairs (`parse_rows`, `rows_from`); heads: the head names put in place of
    `{head}`. Every run must be scored on the same test rows (one test store)."""
    pairs = list(rows)
    labels = [label for label, _ in pairs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"rows named twice: {', '.join(twice)}")
    if reference is not None and reference not in labels:
        raise ValueError(f"--ref {reference!r} is not a row; the rows are {', '.join(labels)}")
    gen = dict(read_generation(g) for g in generation)
    stray = sorted(set(gen) - set(labels))
    if stray:
        raise ValueError(f"--fd names no row: {', '.join(stray)}; the rows are {', '.join(labels)}")
    cells: dict[tuple[str, str], Cell] = {}
    loaded: dict[tuple[str, str], list[Run]] = {}
    for head in heads:
        for label, pattern in pairs:
            files = sorted(glob.glob(pattern.replace("{head}", head)))
            if files:
                runs = [load_run(f) for f in files]
                loaded[label, head] = runs
                cells[label, head] = Cell(
                    files, [100.0 * float(r.correct.mean()) for r in runs], [_point(r.head) for r in runs]
                )
    if not cells:
        raise FileNotFoundError("no results file matches any --row pattern for any --head")
    check_aligned([r for runs in loaded.values() for r in runs])  # one test set for the whole table
    diffs = {}
    if reference is not None:
        for head in heads:
            ref = loaded.get((reference, head))
            for label in labels:
                if label != reference and ref and (label, head) in loaded:
                    diffs[label, head] = compare_runs(loaded[label, head], ref, resamples, seed)
    return SeedTable(labels, list(heads), cells, diffs, gen, reference)


def plot(table: SeedTable, out: Path, title: str = "") -> None:
    """Each head's mean test top-1 (with the seeds' spread) over the rows in their order, and FD on
    a second axis where the rows have it: a curve over checkpoints when the rows are checkpoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(table.rows) + 2), 3.6))
    x = np.arange(len(table.rows))
    for head in table.heads:
        at = [i for i, r in enumerate(table.rows) if (r, head) in table.cells]
        if at:
            cells = [table.cells[table.rows[i], head] for i in at]
            ax.errorbar(
                at,
                [c.mean for c in cells],
                yerr=[c.std for c in cells],
                marker="o",
                capsize=3,
                label=f"{head} test top-1",
            )
    ax.set_xticks(x, table.rows, rotation=30, ha="right")
    ax.set_ylabel("test top-1 (%)")
    handles, labels = ax.get_legend_handles_labels()
    at = [i for i, r in enumerate(table.rows) if r in table.generation]
    if at:
        fd_ax = ax.twinx()
        fd_ax.plot(at, [table.generation[table.rows[i]].fd for i in at], "s--", color="grey", label="FD")
        fd_ax.set_ylabel("FD (lower is better)")
        h2, l2 = fd_ax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    plt.close(fig)


def markdown(table: SeedTable) -> str:
    """The table, then the differences from the reference row, as Markdown."""
    with_gen = bool(table.generation)
    head_cols = [f"{h} test top-1" for h in table.heads]
    gen_col = (
        "FD (precision, recall, class TV)"
        if any(g.class_tv is not None for g in table.generation.values())
        else "FD (precision, recall)"
    )
    lines = [
        "| representation | " + " | ".join(head_cols) + (f" | {gen_col}" if with_gen else "") + " |",
        "|---|" + "---|" * (len(head_cols) + with_gen),
    ]
    for r in table.rows:
        cells = [table.cells[r, h].text() if (r, h) in table.cells else "not run" for h in table.heads]
        if with_gen:
            cells.append(table.generation[r].text() if r in table.generation else "")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each cell: mean test top-1 over runs +- their sample standard deviation (number of runs: seeds).",
    ]
    points = {(r, h): sorted(set(c.points)) for (r, h), c in table.cells.items()}
    lines += [
        "Selected on validation: "
        + "; ".join(f"{r}, {h}: {', '.join(p)}" for (r, h), p in points.items())
        + "."
    ]
    if table.diffs:
        some = next(iter(table.diffs.values()))
        lines += [
            "",
            f"Differences from {table.reference}, in points, paired bootstrap over {some.rows} test images "
            f"({some.resamples} resamples):",
            "",
            "| representation | head | difference | 95% interval |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r} | {h} | {d.points:+.2f} | {d.interval()} |" for (r, h), d in table.diffs.items()]
    return "\n".join(lines) + "\n"
