"""Probe outputs: the results JSON, the saved head, and the results table (CSV).

A head file is a plain dict of tensors plus one JSON string, written with torch.save and
read back with weights_only=True: the module's state, the standardization it was trained
with, and what it needs to be rebuilt and to refuse features of another model.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch

from extract.schema import FeatureKey
from probe.grid import FeatureSet
from probe.heads import build_head
from probe.reader import Standardizer

HEAD_FORMAT = "diffprobe-head"
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


def save_head(path: Path, module: torch.nn.Module, meta: dict, norms: dict[FeatureKey, Standardizer]) -> None:
    tensors = {f"state/{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for i, key in enumerate(meta["features"]):
        norm = norms[FeatureKey.from_dict(key)]
        tensors[f"mean/{i}"] = torch.from_numpy(norm.mean.copy())
        tensors[f"std/{i}"] = torch.from_numpy(norm.std.copy())
    payload = {**tensors, "meta": json.dumps({"format": HEAD_FORMAT, **meta}, default=str)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_head(path: str | Path) -> tuple[torch.nn.Module, dict, FeatureSet, dict[FeatureKey, Standardizer]]:
    """A saved head, rebuilt: (module in eval mode, meta, its feature set, its standardizers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(payload["meta"])
    except Exception as e:  # noqa: BLE001 - anything unreadable is the same user mistake
        raise ValueError(f"{path}: not a diffprobe head file ({type(e).__name__})") from None
    if meta.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path}: not a diffprobe head file")
    keys = tuple(FeatureKey.from_dict(k) for k in meta["features"])
    fs = FeatureSet(keys, tuple(meta["in_shape"]))
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["options"].items()}
    module = build_head(meta["head"], fs.in_shape, int(meta["num_classes"]), options)
    module.load_state_dict({k[len("state/") :]: v for k, v in payload.items() if k.startswith("state/")})
    norms = {k: Standardizer(payload[f"mean/{i}"].numpy(), payload[f"std/{i}"].numpy()) for i, k in enumerate(keys)}
    return module.eval(), meta, fs, norms


def linear_state(weight: np.ndarray, bias: np.ndarray) -> dict[str, torch.Tensor]:
    """A LinearHead state_dict from (classes, D) weights, e.g. a fitted logistic regression."""
    return {"fc.weight": torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)), "fc.bias": torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))}


def format_table(rows: list[dict]) -> str:
    """The results table as aligned text: method, features, test top-1/top-5, val top-1."""
    header = ("model", "weights", "head", "features", "train", "test top-1", "top-5", "val top-1")
    lines = [tuple(str(r.get(k, "")) for k in ("model", "weights", "head", "features", "train_rows", "test_top1", "test_top5", "val_top1")) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 5 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*line) for line in lines])
