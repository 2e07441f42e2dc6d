"""Probe results as files: the results JSON and the results table (CSV), read and written
without torch, so analysis reads them without loading any training code. Head files (which
need torch) are in probe.results."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from pathlib import Path

from probe.edges import edge_note

RESULTS_FORMAT = "diffprobe-probe-results"

TABLE_COLUMNS = [
    "name",
    "head",
    "features",
    "t",
    "b",
    "pool",
    "model",
    "weights",
    "dataset",
    "train_rows",
    "val_rows",
    "test_rows",
    "lr",
    "wd",
    "epochs",
    "val_top1",
    "test_top1",
    "test_top5",
    "seconds",
    "version",
    "results",
    "edge",
]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def write_predictions(path: Path, index, label, pred) -> str:
    """A run's test predictions (`NAME.predictions.npz`: each scored row's dataset position, label
    and top-1 class), written atomically; `analysis diff` and `analysis table` pair runs on them.
    Returns the file's name, as the results JSON records it."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            index=np.asarray(index, np.int64),
            label=np.asarray(label, np.int64),
            pred=np.asarray(pred, np.int64),
        )
    tmp.replace(path)
    return path.name


def put_row(table: Path, row: dict) -> None:
    """A probe run's row in the results table, replacing the row of an earlier run of the same
    name. The name is what a run's files are written under (NAME.json, NAME.head.pt), so a rerun
    has already replaced the files an older row of that name points to: the row goes with them.
    The table is rewritten whole (atomically, holding a lock on its folder, so two runs finishing
    at once both keep their rows, and no lock file is left beside it) with the current columns:
    rows of an older table keep their values and leave new columns empty."""
    import fcntl

    table.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(table.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        rows = read_table(table) if table.is_file() and table.stat().st_size else []
        rows = [r for r in rows if _run_of(r) != _run_of(row)] + [row]
        tmp = table.with_name(table.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, table)
    finally:
        os.close(folder)  # closing the folder releases the lock


def _run_of(row: dict) -> str:
    """What names a run in the table: its results file (NAME.json), else its name."""
    return row.get("results") or f"{row.get('name')}.json"


def read_table(table: Path) -> list[dict]:
    with open(table, newline="") as f:
        return list(csv.DictReader(f))


def natural_key(text: str) -> list:
    """Sort key that reads digit runs as numbers (step2 before step10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def expand(items) -> list[Path]:
    """Results files from comma lists, repeated options and globs (in natural order: step2 before
    step10), in the order given."""
    paths: list[Path] = []
    for item in items:
        for part in (p.strip() for p in str(item).split(",")):
            if not part:
                continue
            hits = sorted(glob.glob(part), key=natural_key) if glob.has_magic(part) else [part]
            if not hits:
                raise FileNotFoundError(f"no results file matches {part}")
            paths += [Path(h) for h in hits]
    return paths


def read_results(path: str | Path) -> dict:
    """A probe run's results JSON; anything else is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        result = json.loads(path.read_text())
    except ValueError:
        result = None
    if not isinstance(result, dict) or result.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path}: not a probe results file (python -m probe train writes them)")
    return result


def format_table(rows: list[dict]) -> str:
    """The results table as aligned text: method, features, test top-1/top-5, val top-1."""
    header = ("model", "weights", "head", "features", "train", "test top-1", "top-5", "val top-1", "edge")
    lines = [
        tuple(
            str(r.get(k, ""))
            for k in (
                "model",
                "weights",
                "head",
                "features",
                "train_rows",
                "test_top1",
                "test_top5",
                "val_top1",
                "edge",
            )
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i < 5 or i == 8 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*line) for line in lines])


def summary_lines(result: dict) -> str:
    """The members' validation and test top-1, the selected one starred, and where the results went."""
    lines = [f"{'member':<48} {'val top-1':>9} {'test top-1':>10}"]
    for i, m in enumerate(result["members"]):
        tag = ", ".join(f"{k}={m[k]}" for k in ("lr", "wd", "C", "k") if k in m)
        label = f"{'*' if i == result['selected'] else ' '} {m['head']} {m['feature_set']} {tag}"
        val, test = m.get("val", {}).get("top1"), m.get("test", {}).get("top1")
        lines.append(
            f"{label:<48} {'' if val is None else f'{val:9.2f}'} {'' if test is None else f'{test:10.2f}'}"
        )
    has_val = any("val" in m for m in result["members"])
    how = (
        "selected (*) by validation"
        if has_val
        else "no validation split: nothing chosen, the test split reported once"
    )
    out = f"{how}; results: {Path(result['config']['results']) / (result['name'] + '.json')}"
    note = edge_note(result.get("edges", []), result.get("extend_edges"))
    if "test" in result:
        out = (
            f"test top-1 {result['test']['top1']:.2f}, top-5 {result['test']['top5']:.2f} "
            f"on {result['test']['rows']} rows; " + out
        )
    return "\n".join(lines + [out] + ([note] if note else []))
