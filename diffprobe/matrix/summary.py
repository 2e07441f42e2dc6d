"""A cell's line from its probe results: the chosen point, its scores and where each came from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from diffprobe.matrix.cells import Cell


def _scores(member: dict) -> dict:
    return {
        "val_top1": member["val"]["top1"],
        "val_top5": member["val"]["top5"],
        "test_top1": member["test"]["top1"],
        "test_top5": member["test"]["top5"],
    }


def chosen(result: dict) -> dict:
    """The member the run chose on validation, with its point and scores."""
    member = result["members"][result["selected"]]
    point = [{k: f.get(k) for k in ("t", "b", "pool")} for f in member["features"]]
    head = {"head": member["head"], "feature_set": member["feature_set"], "points": point}
    head |= {"lr": member.get("lr"), "wd": member.get("wd"), "options": member.get("options", {})}
    return head | _scores(member)


def _store(record: dict) -> dict:
    return {
        "path": record.get("path"),
        "rows": record.get("rows"),
        "dataset": record.get("dataset"),
        "weights": record.get("key", {}).get("weights"),
    }


def summarize(cell: Cell, stores: dict[str, Path], linear: dict, extra: dict, folder: Path) -> dict:
    """The cell's results: `linear` is the grid's chosen member; `knn` and `attention` the extra
    heads at its point; provenance gives the stores (dataset fingerprints, weights hashes), the
    results files and the versions."""
    line = {"point": chosen(linear)}
    line |= {"linear": {k: v for k, v in line["point"].items() if "top" in k}}
    if "knn" in extra:
        line["knn"] = {f"k{m['k']}": _scores(m) for m in extra["knn"]["members"]}
    if "attention" in extra:
        line["attention"] = chosen(extra["attention"])
    line["options"] = {
        "model": dataclasses.asdict(cell.model) | {"weights": str(cell.model.weights or "")},
        "dataset": dataclasses.asdict(cell.dataset) | {"root": str(cell.dataset.root or "")},
    }
    line["provenance"] = {
        "results": str(folder / f"{linear['name']}.json"),
        "predictions": str(folder / linear["predictions"]) if linear.get("predictions") else None,
        "stores": {role: _store(linear["stores"][role]) for role in ("train", "test")},
        "diffprobe_version": linear.get("version"),
        "validation": linear.get("validation"),
    }
    return line
