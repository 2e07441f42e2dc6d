"""Saved heads (the results JSON and table are in probe.tables, which needs no torch).

A head file is a plain dict of tensors plus one JSON string, written with torch.save and
read back with weights_only=True: the module's state, the standardization it was trained
with, and what it needs to be rebuilt and to refuse features of another model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from extract.store.schema import FeatureKey
from probe.grid import FeatureSet, head_for
from probe.reader import Standardizer

HEAD_FORMAT = "diffprobe-head"


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
    fs = FeatureSet(keys, tuple(meta["in_shape"]), tuple(tuple(s) for s in meta.get("row_shapes", ())))
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["options"].items()}
    module = head_for(meta["head"], fs, int(meta["num_classes"]), options)
    module.load_state_dict({k[len("state/") :]: v for k, v in payload.items() if k.startswith("state/")})
    norms = {
        k: Standardizer(payload[f"mean/{i}"].numpy(), payload[f"std/{i}"].numpy()) for i, k in enumerate(keys)
    }
    return module.eval(), meta, fs, norms


def linear_state(weight: np.ndarray, bias: np.ndarray) -> dict[str, torch.Tensor]:
    """A LinearHead state_dict from (classes, D) weights, e.g. a fitted logistic regression."""
    return {
        "fc.weight": torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)),
        "fc.bias": torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)),
    }
