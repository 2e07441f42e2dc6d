"""What a probe run writes: each member's scores, the member chosen on validation, the results
JSON, its test predictions, the chosen head and a row of the results table."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from torch import nn

from extract import __version__
from extract.store.cli_options import invocation
from extract.store.schema import FeatureKey, FeatureStore, pool_label
from probe.config import ProbeConfig
from probe.data import ProbeData
from probe.edges import find_edges
from probe.heads import HEADS
from probe.metrics import accuracy, report
from probe.reader import ProbeDataError, store_summary
from probe.results import save_head
from probe.tables import RESULTS_FORMAT, put_row, write_json, write_predictions


@dataclass(frozen=True)
class Member:
    """One trained or fitted member of the grid."""

    # its entry in the results file: the head, its settings and feature set (scores are added)
    entry: dict
    # split name -> (n, k) top-k class indices on the split's scored rows
    tops: dict[str, np.ndarray]
    # what is saved when it is chosen; None: nothing to save (k-NN)
    module: nn.Module | None


@dataclass(frozen=True)
class Scores:
    """The members of a run, in order, and what they were scored against."""

    members: tuple[Member, ...] = ()
    # split name -> (n,) labels of the scored rows, in the order of every member's tops
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    # per epoch of the gradient-trained grid: mean train loss, lr factor (members hold their
    # validation curve)
    history: tuple[dict, ...] = ()

    def __add__(self, other: Scores) -> Scores:
        return Scores(
            self.members + other.members,
            {**other.truth, **self.truth},
            {**self.timing, **other.timing},
            self.history + other.history,
        )


def select(members: list[dict], has_val: bool) -> int:
    """The member with the best validation top-1 (the first on ties); test is never looked at."""
    if has_val:
        return max(range(len(members)), key=lambda i: (members[i]["val"]["top1"], -i))
    if len(members) == 1:
        return 0
    raise ProbeDataError(
        f"{len(members)} grid members but no validation rows to choose among them; "
        "set --val-fraction or --val"
    )


def jsonable_config(cfg: ProbeConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def default_name(cfg: ProbeConfig, store: FeatureStore) -> str:
    return f"{'-'.join(cfg.heads)}_{store.path.name.removesuffix('.zarr')}"


def validation_note(cfg: ProbeConfig, data: ProbeData) -> str:
    """Where validation came from, and which view of a K-view store it scores."""
    if "val" not in data.evals:
        return "none"
    where = (
        "store"
        if data.val_store
        else f"{cfg.val_fraction:.0%} of train, class-stratified, seed {cfg.training.seed}"
    )
    views = data.evals["val"].reader.store.views
    if views > 1:  # evaluation reads one view per row (eval_batches) unless the views are averaged
        how = f"the mean of its {views} views" if cfg.view_mode == "mean" else f"view 0 of its {views}"
        where += f"; scored on {how}"
    return where


def _head_meta(name: str, chosen: dict, data: ProbeData, train_summary: dict) -> dict:
    """What a saved head carries to be re-evaluated (probe.results.load_head)."""
    chosen_set = next(fs for fs in data.sets if fs.name == chosen["feature_set"])
    return {
        "head": "linear" if chosen["head"] == "logreg" else chosen["head"],
        "options": chosen.get("options", {}),
        "features": chosen["features"],
        "in_shape": list(chosen_set.in_shape),
        "row_shapes": [list(s) for s in chosen_set.row_shapes],
        "num_classes": len(data.classes),
        "classes": data.classes,
        "compatible": train_summary["key"],
        "trained_as": chosen,
        "results": f"{name}.json",
        "train_store": train_summary["path"],
        "version": __version__,
    }


def write_outputs(
    cfg: ProbeConfig,
    data: ProbeData,
    scores: Scores,
    started: float,
    log_file: Path | None = None,
    extension: dict | None = None,
) -> dict:
    """Score every member, choose one on validation, and write the results JSON, the test
    predictions, the chosen head and the table row. Returns the results dict. `extension`: what
    extending the grid past its edges did (probe.edges.extend's record)."""
    evals, n_classes, truth = data.evals, len(data.classes), scores.truth
    members = [
        {**m.entry, **{split: accuracy(m.tops[split], truth[split]) for split in evals}}
        for m in scores.members
    ]
    selected = select(members, "val" in evals)
    chosen, tops = members[selected], scores.members[selected].tops
    name = cfg.name or default_name(cfg, data.train_store)
    out_dir = Path(cfg.results)
    stores = {"train": store_summary(data.train_store, data.train.rows)}
    for split, store in (("val", data.val_store), ("test", data.test_store)):
        if store is not None:
            stores[split] = store_summary(store, evals[split].rows)
    result = {
        "format": RESULTS_FORMAT,
        "version": __version__,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": jsonable_config(cfg),
        "stores": stores,
        "validation": validation_note(cfg, data),
        "classes": data.classes,
        "members": members,
        "selected": selected,
        "head": chosen,
        # settings whose chosen value is its grid's last (e.g. "lr high"), judged on validation
        "edges": [str(e) for e in find_edges(members, selected)] if "val" in evals else [],
        **({"extend_edges": extension} if extension is not None else {}),
        "timing": scores.timing,
        "history": list(scores.history),
        # the command and its resolved options: `--config` this file to rerun it
        "invocation": invocation(),
        "log_file": None if log_file is None else str(log_file),
        "warnings": data.warnings,
        "overlap": data.overlaps,
    }
    for split in evals:
        result[split] = report(tops[split], truth[split], n_classes)
    if "test" in evals:
        # the chosen member's top-1 on each scored test row, keyed by dataset position
        # (`analysis diff` pairs runs on it)
        result["predictions"] = write_predictions(
            out_dir / f"{name}.predictions.npz",
            data.test_store.index()[evals["test"].mask],
            truth["test"],
            tops["test"][:, 0],
        )
    module = scores.members[selected].module
    if module is not None:
        head_path = out_dir / f"{name}.head.pt"
        save_head(head_path, module, _head_meta(name, chosen, data, stores["train"]), data.norms)
        result["head_file"] = str(head_path)
    result["timing"]["total_seconds"] = round(time.perf_counter() - started, 3)
    write_json(out_dir / f"{name}.json", result)
    put_row(out_dir / "probe_results.csv", table_row(cfg, data.train_store, result))
    return result


def _weights_label(store: FeatureStore) -> str:
    w = store.attrs.get("key", {}).get("weights", {})
    if w.get("random_init"):
        return "random-init"
    return "none" if w.get("none") else f"{w.get('checkpoint')}@{str(w.get('sha256', ''))[:12]}"


def _fmt(x) -> str:
    return "" if x is None else f"{x:.2f}"


def table_row(cfg: ProbeConfig, train_store: FeatureStore, result: dict) -> dict:
    chosen = result["head"]
    keys = [FeatureKey.from_dict(k) for k in chosen["features"]]
    val, test = result.get("val", {}), result.get("test", {})
    return {
        "name": result["name"],
        "head": chosen["head"],
        "features": chosen["feature_set"],
        "t": "+".join(str(k.t) for k in keys),
        "b": "+".join(str(k.b) for k in keys),
        "pool": "+".join(pool_label(k.pool) for k in keys),
        "model": train_store.attrs.get("provenance", {}).get("preset", ""),
        "weights": _weights_label(train_store),
        "dataset": (train_store.attrs.get("key", {}).get("dataset") or {}).get("name", ""),
        "train_rows": result["stores"]["train"]["rows"],
        "val_rows": val.get("rows", 0),
        "test_rows": test.get("rows", 0),
        "lr": chosen.get("lr", ""),
        "wd": chosen.get("wd", ""),
        "epochs": cfg.training.epochs if chosen["head"] in HEADS else "",
        "val_top1": _fmt(val.get("top1")),
        "test_top1": _fmt(test.get("top1")),
        "test_top5": _fmt(test.get("top5")),
        "seconds": round(result["timing"]["total_seconds"], 1),
        "version": __version__,
        "results": f"{result['name']}.json",
        "edge": ", ".join(result.get("edges", [])),
    }
