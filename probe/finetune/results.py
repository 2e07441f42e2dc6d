"""A fine-tuning run's results in the probe's format: `probe table`, curves and the report read
them; the test split's predictions beside them, as `probe train` writes them (`analysis diff`
pairs a fine-tuned run with frozen heads on them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from extract import __version__
from extract.models.adm_presets import ModelPreset
from extract.models.weights import weights_label
from extract.store.cli_options import invocation
from extract.store.schema import FeatureKey, pool_label
from probe.finetune.model import _NOT_IN_RUN, FinetuneConfig
from probe.tables import RESULTS_FORMAT, put_row, write_json, write_predictions


def run_fields(cfg: FinetuneConfig) -> dict:
    """The settings a run is made of (and a resumed run must keep), as JSON values."""
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in dataclasses.asdict(cfg).items()
        if k not in _NOT_IN_RUN
    }


def run_name(cfg: FinetuneConfig, preset: ModelPreset, block: int) -> str:
    return cfg.name or f"finetune-{cfg.head}_{preset.name}_t{cfg.t}_b{block}_p{pool_label(cfg.pool)}"


@dataclass(frozen=True)
class TestScores:
    """The selected epoch's weights on the test split."""

    top1: float
    top5: float
    rows: np.ndarray  # the test rows scored
    labels: np.ndarray  # (n,) their true classes
    predicted: np.ndarray  # (n,) the top-1 predicted classes
    dataset: dict  # name, split, fingerprint and rows of the test split


@dataclass(frozen=True)
class Outcome:
    """What a fine-tuning run produced: everything its results file and table row say."""

    cfg: FinetuneConfig
    preset: ModelPreset
    block: int
    opts: dict  # the resolved recipe
    weights: dict  # the U-Net's starting weights record
    key: FeatureKey  # the (t, b, pool) the head reads
    trainable: int  # parameters trained: the U-Net prefix's and the head's
    best: dict  # the selected epoch: {"val_top1", "epoch", ...}
    log: dict  # {"epochs": per-epoch history, "test": [[epoch, top-1], ...] scored along the way}
    test: TestScores
    n_train: int
    n_val: int
    seconds: float  # training time
    export: Path  # the fine-tuned U-Net's weights
    log_file: Path | None = None


def write_results(o: Outcome) -> dict:
    """The results JSON (one member), the predictions file and the results table's row; returns
    the results dict."""
    cfg, opts, key, best = o.cfg, o.opts, o.key, o.best
    name = run_name(cfg, o.preset, o.block)
    out_dir = Path(cfg.results)
    n_test = len(o.test.rows)
    member = {
        "head": cfg.head,
        "feature_set": key.label,
        "features": [key.to_dict()],
        "lr": opts["lr"],
        "wd": 0.0,
        "finetuned": True,
        "trainable": cfg.trainable,
        "freeze_blocks": cfg.freeze_blocks,
        "trainable_parameters": o.trainable,
        "val": {"top1": best["val_top1"]},
        "test": {"top1": o.test.top1},
        "epoch": best["epoch"],
    }
    train_key = {
        "model": {"name": o.preset.name, **o.preset.to_dict()},
        "weights": o.weights,
        "t": cfg.t,
        "seed": cfg.seed,
        "dataset": {"name": cfg.data, "split": cfg.train_split},
    }
    if o.n_val:
        validation = (
            f"{opts['val_fraction']:.0%} of train, class-stratified, seed {cfg.seed}; picks the epoch"
        )
    else:
        validation = "none: all of train is trained on and the last epoch is reported"
    result = {
        "format": RESULTS_FORMAT,
        "version": __version__,
        "name": name,
        "kind": "finetune",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**run_fields(cfg), **opts, "block": o.block},
        "stores": {
            "train": {"path": None, "rows": o.n_train, "key": train_key},
            "test": {"path": None, "rows": n_test, "dataset": o.test.dataset},
        },
        "validation": validation,
        "members": [member],
        "selected": 0,
        "head": member,
        "val": {"top1": best["val_top1"], "rows": o.n_val},
        "test": {"top1": o.test.top1, "top5": o.test.top5, "rows": n_test},
        "history": o.log["epochs"],
        "test_along_the_way": {
            "every_epochs": opts["eval_every"],
            "top1": o.log["test"],
            "use": "reported only; nothing is chosen on it",
        },
        "timing": {"train": {"seconds": round(o.seconds, 1)}, "total_seconds": round(o.seconds, 1)},
        "exported": str(o.export),
        # the command and its resolved options: `--config` this file to rerun it
        "invocation": invocation(),
        "log_file": None if o.log_file is None else str(o.log_file),
    }
    result["predictions"] = write_predictions(
        out_dir / f"{name}.predictions.npz", o.test.rows, o.test.labels, o.test.predicted
    )
    write_json(out_dir / f"{name}.json", result)
    put_row(out_dir / "probe_results.csv", table_row(o, name))
    return result


def table_row(o: Outcome, name: str) -> dict:
    """The run's row of probe_results.csv."""
    cfg, best = o.cfg, o.best
    return {
        "name": name,
        "head": f"{cfg.head} (fine-tuned)",
        "features": o.key.label,
        "t": cfg.t,
        "b": o.block,
        "pool": pool_label(cfg.pool),
        "model": o.preset.name,
        "weights": weights_label(o.weights),
        "dataset": cfg.data,
        "train_rows": o.n_train,
        "val_rows": o.n_val,
        "test_rows": len(o.test.rows),
        "lr": o.opts["lr"],
        "wd": 0.0,
        "epochs": o.opts["epochs"],
        "val_top1": "" if best["val_top1"] is None else f"{best['val_top1']:.2f}",
        "test_top1": f"{o.test.top1:.2f}",
        "test_top5": f"{o.test.top5:.2f}",
        "seconds": round(o.seconds, 1),
        "version": __version__,
        "results": f"{name}.json",
    }
