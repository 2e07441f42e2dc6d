"""The probe run: check the stores, carve validation, train the grid and baselines, select
on validation, evaluate on test, write results. `probe(config)` is the whole stage."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from extract.store import progress
from extract.store.cli_options import invocation
from extract.store.dist import process_group
from probe import baselines
from probe.config import ProbeConfig
from probe.data import MiB, ProbeData, Split, prepare
from probe.grid import (
    OPTIMIZERS,
    SCHEDULES,
    FeatureSet,
    Grid,
    MemberSpec,
    build_member,
    head_inputs,
    predict_grid,
    train_grid,
)
from probe.edges import extend
from probe.heads import BASELINES, HEADS, LinearHead, parse_head_options
from probe.metrics import accuracy
from probe.outputs import Member, Scores, default_name, jsonable_config, select, write_outputs
from probe.reader import ProbeDataError, epoch_windows, eval_batches, steps_per_epoch, stream_batches
from probe.results import linear_state
from probe.tables import summary_lines
from probe.tensorboard import write_history


def validate(cfg: ProbeConfig) -> None:
    for h in cfg.heads:
        if h not in HEADS and h not in BASELINES:
            raise ValueError(f"unknown head {h!r}; choose one of: {', '.join([*HEADS, *BASELINES])}")
    if not cfg.heads:
        raise ValueError("give at least one --head")
    if cfg.training.epochs < 1 or cfg.training.batch_size < 1 or cfg.buffer_mb < 1:
        raise ValueError("--epochs, --batch-size and --buffer-mb must be positive")
    lrs = cfg.lrs or tuple(lr for _, lr in cfg.head_lrs)
    if any(lr <= 0 for lr in lrs) or any(wd < 0 for wd in cfg.wds) or not lrs or not cfg.wds:
        raise ValueError("learning rates must be positive and weight decays non-negative")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.extend_edges < 0:
        raise ValueError(f"--extend-edges must be 0 or more, got {cfg.extend_edges}")
    if cfg.extend_edges and cfg.val is None and cfg.val_fraction == 0:
        raise ValueError("--extend-edges chooses on validation: give --val or a --val-fraction above 0")
    if cfg.training.optimizer not in OPTIMIZERS or cfg.training.schedule not in SCHEDULES:
        raise ValueError(
            f"--optimizer must be one of {', '.join(OPTIMIZERS)}, --schedule one of {', '.join(SCHEDULES)}"
        )


def _options_for(head: str, options: dict) -> tuple[tuple[str, object], ...]:
    takes = set(inspect.signature(HEADS[head].__init__).parameters)
    return tuple(sorted((k, v) for k, v in options.items() if k in takes))


def grid_specs(cfg: ProbeConfig, sets: list[FeatureSet]) -> list[MemberSpec]:
    options = parse_head_options(cfg.head_options)
    trained = [h for h in cfg.heads if h in HEADS]
    unused = [k for k in options if not any(k in dict(_options_for(h, {k: 0})) for h in trained)]
    if unused:
        raise ValueError(
            f"head option(s) {', '.join(unused)} apply to none of the heads {', '.join(trained) or '(none)'}"
        )
    per_head = dict(cfg.head_lrs)
    return [
        MemberSpec(h, _options_for(h, options), fs, lr, wd)
        for h in trained
        for fs, lr, wd in itertools.product(sets, cfg.lrs or (per_head[h],), cfg.wds)
    ]


def probe(cfg: ProbeConfig) -> dict:
    """Train, select and evaluate; write the results JSON, the selected head and a table row.
    Returns the results dict (rank 0; other ranks return {})."""
    started = time.perf_counter()
    validate(cfg)
    with process_group(cfg.device) as (world, device):
        data = prepare(cfg)
        name = cfg.name or default_name(cfg, data.train_store)
        with progress.run_log(Path(cfg.results), name, enabled=world.is_main) as log_file:
            _log_inputs(cfg, data)
            scores = Scores()
            if grid_specs(cfg, data.sets):
                scores += train_heads(cfg, data, device, world)
            if not world.is_main:
                return {}
            baseline_heads = [h for h in cfg.heads if h in BASELINES]
            if baseline_heads:
                scores += run_baselines(cfg, data, baseline_heads)
            extension = None
            if cfg.extend_edges:
                scores, extension = extend_grid(cfg, data, device, world, scores)
            result = write_outputs(cfg, data, scores, started, log_file, extension)
            progress.LOG.info("result:\n%s", summary_lines(result))
            if cfg.tensorboard is not None:
                _write_tensorboard(Path(cfg.tensorboard) / result["name"], result)
            return result


def _log_inputs(cfg: ProbeConfig, data: ProbeData) -> None:
    progress.LOG.info("arguments: %s", json.dumps(invocation() or {"config": jsonable_config(cfg)}))
    stores = {s: str(p) for s, p in (("train", cfg.train), ("val", cfg.val), ("test", cfg.test)) if p}
    progress.LOG.info("stores: %s", json.dumps(stores))
    progress.LOG.info("train store key: %s", json.dumps(data.train_store.compatibility_key(), default=str))


def _write_tensorboard(folder: Path, result: dict) -> None:
    """The per-epoch history, with each member's validation top-1 of the epoch."""
    curves = [m.get("val_top1_by_epoch", []) for m in result["members"]]
    rows = [
        {**h, "val_top1": [curve[i] for curve in curves if len(curve) > i]}
        for i, h in enumerate(result["history"])
    ]
    progress.LOG.info("tensorboard: %s", write_history(folder, rows))


def extend_grid(cfg: ProbeConfig, data: ProbeData, device: torch.device, world, scores: Scores):
    """The grid extended past its edges (probe.edges), at most cfg.extend_edges steps: new
    members of the chosen head and feature set, trained and scored as the first ones were and
    chosen among on validation with them. Returns (all the scores, the extension's record)."""
    if world.size > 1:
        raise ValueError("--extend-edges runs in one process; run without torchrun or leave it out")
    by_entry: list[Member] = list(scores.members)

    def scored(members) -> list[dict]:
        return [{**m.entry, "val": accuracy(m.tops["val"], scores.truth["val"])} for m in members]

    def score_more(chosen: dict, grid: dict) -> list[dict]:
        fs = next(fs for fs in data.sets if fs.name == chosen["feature_set"])
        sub = dataclasses.replace(data, sets=[fs])
        if chosen["head"] in HEADS:
            base = next(s for s in grid_specs(cfg, [fs]) if _same_head(s.describe(), chosen))
            specs = [dataclasses.replace(base, lr=lr, wd=wd) for lr in grid["lr"] for wd in grid["wd"]]
            more = train_heads(cfg, sub, device, world, specs)
        else:
            more = run_baselines(dataclasses.replace(cfg, logreg_c=grid["C"]), sub, [chosen["head"]])
        progress.LOG.info("edge: %s tried", ", ".join(f"{k}={v}" for k, v in grid.items()))
        by_entry.extend(more.members)
        return scored(more.members)

    _, record = extend(scored(scores.members), lambda ms: select(ms, True), score_more, cfg.extend_edges)
    return dataclasses.replace(scores, members=tuple(by_entry)), record


def _same_head(a: dict, b: dict) -> bool:
    """Two members' entries name the same head, head options and feature set."""
    return all(a[k] == b[k] for k in ("head", "options", "feature_set"))


def train_heads(
    cfg: ProbeConfig, data: ProbeData, device: torch.device, world, specs: list[MemberSpec] | None = None
) -> Scores:
    """Train the gradient-trained grid (cfg's, or the specs given) in one pass (DDP across
    ranks) and score it (rank 0; the other ranks return the timing only)."""
    seed, train = cfg.training.seed, data.train
    specs = specs if specs is not None else grid_specs(cfg, data.sets)
    window_rows = max(cfg.training.batch_size, cfg.buffer_mb * MiB // (2 * train.reader.row_bytes()))
    if world.size > 1:  # ranks take whole windows in turn: give each rank several
        window_rows = max(1, min(window_rows, train.rows // (8 * world.size)))
    per_rank = max(1, cfg.training.batch_size // world.size)
    settings = dataclasses.replace(cfg.training, batch_size=per_rank)
    modules = [build_member(s, len(data.classes), seed) for s in specs]
    grid = Grid(specs, data.sets, modules, settings, device)
    ddp = torch.nn.parallel.DistributedDataParallel(grid) if world.size > 1 else None
    plan = epoch_windows(train.reader, train.mask, window_rows, seed, 0)
    steps = steps_per_epoch(plan, per_rank, world.size)
    if steps == 0:
        raise ProbeDataError(
            f"{train.rows} training rows make no full batch of {cfg.training.batch_size}; lower --batch-size"
        )

    def epochs(e: int):
        return stream_batches(
            train.reader,
            train.mask,
            train.labels,
            batch=per_rank,
            window_rows=window_rows,
            seed=seed,
            epoch=e,
            rank=world.rank,
            world=world.size,
        )

    val_by_epoch = []

    def score_validation(epoch: int) -> None:
        # the per-epoch history's validation top-1, every member (rank 0)
        if world.is_main and "val" in data.evals:
            top, truth = predict_grid(grid, _batches(data.evals["val"]), data.norms, device, k=1)
            val_by_epoch.append(
                [round(100.0 * float((top[:, i, 0] == truth).mean()), 4) for i in range(len(specs))]
            )

    timing = train_grid(
        grid,
        epochs,
        steps,
        data.norms,
        device,
        ddp=ddp,
        progress=cfg.progress and world.is_main,
        after_epoch=score_validation,
    )
    history = tuple(timing.pop("history"))
    timing = {
        "train": {
            **timing,
            "window_rows": int(window_rows),
            "preload": train.reader.preload,
            "steps_per_epoch": steps,
        }
    }
    if not world.is_main:
        return Scores(timing=timing, history=history)
    tops, truth = {}, {}
    for split in data.evals.values():
        tops[split.name], truth[split.name] = predict_grid(grid, _batches(split), data.norms, device)
    members = tuple(
        Member(
            {**s.describe(), "val_top1_by_epoch": [v[i] for v in val_by_epoch]},
            {split: top[:, i] for split, top in tops.items()},
            grid.member(i),
        )
        for i, s in enumerate(specs)
    )
    return Scores(members, truth, timing, history)


def _batches(split: Split):
    return eval_batches(split.reader, split.mask, split.labels)


def _gather(split: Split, norms: dict, fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """The split's rows of one feature set, standardized and flattened, in memory: ((n, D), (n,))."""
    xs, ys = [], []
    for values, y, _ in _batches(split):
        xs.append(head_inputs(values, norms, [fs], "cpu")[0].flatten(1).numpy())
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _logreg_members(cfg: ProbeConfig, data: ProbeData, fs: FeatureSet, split_x: dict) -> list[Member]:
    """One member per C, fitted on the training rows; each saves as a linear head."""
    n_classes = len(data.classes)
    x, y = _gather(data.train, data.norms, fs)
    members = []
    for c in cfg.logreg_c:
        model, converged = baselines.fit_logreg(x, y, c, cfg.training.seed)
        weight, bias = baselines.logreg_weights(model, n_classes)
        head = LinearHead((int(np.prod(fs.in_shape)), 1, 1), n_classes)
        head.load_state_dict(linear_state(weight, bias))
        entry = {
            "head": "logreg",
            "C": c,
            "converged": converged,
            "features": [k.to_dict() for k in fs.keys],
            "feature_set": fs.name,
        }
        tops = {s: baselines.logreg_top(model, sx, n_classes) for s, (sx, _) in split_x.items()}
        members.append(Member(entry, tops, head))
    return members


def _knn_members(cfg: ProbeConfig, data: ProbeData, fs: FeatureSet, split_x: dict) -> list[Member]:
    """One member per k; the training rows are streamed into each split's bank."""
    n_classes = len(data.classes)
    banks = {s: baselines.KnnBank(sx, max(cfg.knn_k)) for s, (sx, _) in split_x.items()}
    for values, y, _ in _batches(data.train):
        rows = head_inputs(values, data.norms, [fs], "cpu")[0].flatten(1).numpy()
        for bank in banks.values():
            bank.add(rows, y)
    entries = [
        {
            "head": "knn",
            "k": k,
            "temperature": cfg.knn_temperature,
            "features": [key.to_dict() for key in fs.keys],
            "feature_set": fs.name,
        }
        for k in cfg.knn_k
    ]
    return [
        Member(
            entry,
            {s: bank.top(entry["k"], n_classes, cfg.knn_temperature) for s, bank in banks.items()},
            None,
        )
        for entry in entries
    ]


def run_baselines(cfg: ProbeConfig, data: ProbeData, heads: list[str]) -> Scores:
    """logreg (one member per C) and knn (one member per k) for every feature set."""
    members, truth = [], {}
    for fs in data.sets:
        split_x = {s: _gather(split, data.norms, fs) for s, split in data.evals.items()}
        for s, (_, y) in split_x.items():
            truth.setdefault(s, y)
        if "logreg" in heads:
            members += _logreg_members(cfg, data, fs, split_x)
        if "knn" in heads:
            members += _knn_members(cfg, data, fs, split_x)
    return Scores(tuple(members), truth)
