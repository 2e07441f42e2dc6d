"""Probe results as files: the results JSON and the results table (CSV), read and written
without torch, so analysis reads them without loading any training code. Head files (which
need torch) are in probe.results."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

RESULTS_FORMAT = "diffprobe-probe-results"

TABLE_COLUMNS = [
    "name", "head", "features", "t", "b", "pool", "model", "weights", "dataset", "train_rows", "val_rows", "test_rows",
    "lr", "wd", "epochs", "val_top1", "test_top1", "test_top5", "seconds", "version", "results",
]  # fmt: skip


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def append_row(table: Path, row: dict) -> None:
    """One row per probe run; the header is written with the first row."""
    table.parent.mkdir(parents=True, exist_ok=True)
    new = not table.exists() or table.stat().st_size == 0
    with open(table, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_table(table: Path) -> list[dict]:
    with open(table, newline="") as f:
        return list(csv.DictReader(f))


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
    header = ("model", "weights", "head", "features", "train", "test top-1", "top-5", "val top-1")
    lines = [tuple(str(r.get(k, "")) for k in ("model", "weights", "head", "features", "train_rows", "test_top1", "test_top5", "val_top1")) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 5 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*line) for line in lines])
