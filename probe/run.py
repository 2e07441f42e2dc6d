"""The probe run: check the stores, carve validation, train the grid and baselines, select
on validation, evaluate on test, write results. `probe(config)` is the whole stage."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from extract import __version__
from extract.store import progress
from extract.store.cli_options import invocation
from extract.store.dist import close_world, init_world, pick_device
from extract.store.overlap import check_overlap
from extract.store.schema import FeatureKey, FeatureStore, open_complete, parse_feature_set, pool_label
from probe import baselines
from probe.config import ProbeConfig
from probe.grid import (
    OPTIMIZERS,
    SCHEDULES,
    Grid,
    MemberSpec,
    build_member,
    feature_set,
    head_inputs,
    predict_grid,
    train_grid,
)
from probe.heads import BASELINES, HEADS, LinearHead, parse_head_options
from probe.metrics import accuracy, report
from probe.reader import (
    FeatureReader,
    ProbeDataError,
    carve_validation,
    check_compatible,
    check_finite,
    epoch_windows,
    eval_batches,
    fit_standardizers,
    steps_per_epoch,
    store_classes,
    store_summary,
    stream_batches,
)
from probe.results import linear_state, save_head
from probe.select import chosen_features
from probe.tables import RESULTS_FORMAT, append_row, summary_lines, write_json, write_predictions
from probe.tensorboard import write_history

MiB = 1 << 20


def parse_feature_sets(cfg: ProbeConfig, store: FeatureStore) -> list[tuple[FeatureKey, ...]]:
    """The feature sets to train on: --features as given ("all": every key of the store as one
    set, as a fusion head takes them), the one another run chose on validation (--features-from),
    or each of the store's keys alone, narrowed by -t, -b and --pool."""
    if cfg.features_from is not None:
        if cfg.features or cfg.ts or cfg.blocks or cfg.pools:
            raise ValueError("give either --features-from or --features/-t/-b/--pool, not both")
        return [parse_feature_set(chosen_features(cfg.features_from))]
    if cfg.features:
        if cfg.ts or cfg.blocks or cfg.pools:
            raise ValueError("give either --features or -t/-b/--pool, not both")
        every = tuple(sorted(store.keys(), key=FeatureKey.sort_key))
        return [
            every if spec.strip().lower() == "all" else tuple(dict.fromkeys(parse_feature_set(spec)))
            for spec in cfg.features
        ]
    keys = [
        k
        for k in sorted(store.keys(), key=FeatureKey.sort_key)
        if (not cfg.ts or k.t in cfg.ts)
        and (not cfg.blocks or k.b in cfg.blocks)
        and (not cfg.pools or k.pool in cfg.pools)
    ]
    if not keys:
        held = ", ".join(k.label for k in store.keys())
        raise ValueError(
            f"{store.path} has no features with t in {list(cfg.ts) or 'any'}, b in {list(cfg.blocks) or 'any'}, "
            f"pool in {[pool_label(p) for p in cfg.pools] or 'any'}; it holds: {held}"
        )
    return [(k,) for k in keys]


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
    if cfg.training.optimizer not in OPTIMIZERS or cfg.training.schedule not in SCHEDULES:
        raise ValueError(
            f"--optimizer must be one of {', '.join(OPTIMIZERS)}, --schedule one of {', '.join(SCHEDULES)}"
        )


def _options_for(head: str, options: dict) -> tuple[tuple[str, object], ...]:
    takes = set(inspect.signature(HEADS[head].__init__).parameters)
    return tuple(sorted((k, v) for k, v in options.items() if k in takes))


def grid_specs(cfg: ProbeConfig, sets) -> list[MemberSpec]:
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


def _weights_label(store: FeatureStore) -> str:
    w = store.attrs.get("key", {}).get("weights", {})
    if w.get("random_init"):
        return "random-init"
    return "none" if w.get("none") else f"{w.get('checkpoint')}@{str(w.get('sha256', ''))[:12]}"


@dataclass
class ProbeData:
    """The checked inputs of one probe run: stores, row masks, readers, standardization."""

    train_store: FeatureStore
    val_store: FeatureStore | None
    test_store: FeatureStore | None
    labels: np.ndarray
    train_mask: np.ndarray
    classes: list[str]
    reader: FeatureReader  # the training store's, over every key any feature set uses
    sets: list
    evals: dict  # split -> (reader, row mask, labels)
    norms: dict
    warnings: list[str] = field(default_factory=list)  # e.g. stores paired across micro-batch or device
    overlaps: list[dict] = field(default_factory=list)  # each pair of splits checked for shared images


@dataclass
class Scores:
    """Per member: its description, its top-k on each evaluated split, a module to save."""

    members: list[dict] = field(default_factory=list)
    tops: dict[str, list[np.ndarray]] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    modules: list = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    history: list = field(
        default_factory=list
    )  # per epoch of the gradient-trained grid: mean train loss, lr factor (members hold their validation curve)


def probe(cfg: ProbeConfig) -> dict:
    """Train, select and evaluate; write the results JSON, the selected head and a table row.
    Returns the results dict (rank 0; other ranks return {})."""
    started = time.perf_counter()
    validate(cfg)
    device = pick_device(cfg.device)
    world = init_world(device)
    try:
        device = pick_device(cfg.device, world)
        data = prepare(cfg)
        name = cfg.name or _default_name(cfg, data.train_store)
        with progress.run_log(Path(cfg.results), name, enabled=world.is_main) as log_file:
            progress.LOG.info("arguments: %s", json.dumps(invocation() or {"config": _jsonable_config(cfg)}))
            progress.LOG.info(
                "stores: %s",
                json.dumps(
                    {s: str(p) for s, p in (("train", cfg.train), ("val", cfg.val), ("test", cfg.test)) if p}
                ),
            )
            progress.LOG.info(
                "train store key: %s", json.dumps(data.train_store.compatibility_key(), default=str)
            )
            scores = Scores(tops={s: [] for s in data.evals})
            if grid_specs(cfg, data.sets):
                train_heads(cfg, data, scores, device, world)
            if not world.is_main:
                return {}
            baseline_heads = [h for h in cfg.heads if h in BASELINES]
            if baseline_heads:
                run_baselines(cfg, data, scores, baseline_heads)
            result = write_outputs(cfg, data, scores, started, log_file)
            progress.LOG.info("result:\n%s", summary_lines(result))
            if cfg.tensorboard is not None:
                rows = [
                    {
                        **h,
                        "val_top1": [
                            m.get("val_top1_by_epoch", [])[i]
                            for m in result["members"]
                            if len(m.get("val_top1_by_epoch", [])) > i
                        ],
                    }
                    for i, h in enumerate(result["history"])
                ]
                progress.LOG.info(
                    "tensorboard: %s", write_history(Path(cfg.tensorboard) / result["name"], rows)
                )
            return result
    finally:
        close_world(world)


def prepare(cfg: ProbeConfig) -> ProbeData:
    """Open and cross-check the stores, carve validation, refuse bad features, fit standardization."""
    seed = cfg.training.seed
    train_store = open_complete(cfg.train)
    val_store = open_complete(cfg.val) if cfg.val else None
    test_store = open_complete(cfg.test) if cfg.test else None
    warnings, overlaps = [], []
    for other in (val_store, test_store):
        if other is not None:
            warnings += check_compatible(train_store, other)
    named = [
        (split, store)
        for split, store in (("train", train_store), ("val", val_store), ("test", test_store))
        if store is not None
    ]
    for i, (split_a, a) in enumerate(named):  # no image may be in two splits unless allowed
        for split_b, b in named[i + 1 :]:
            found = check_overlap(
                a, b, cfg.allow_overlap, f"{split_a} ({a.path.name}) and {split_b} ({b.path.name})"
            )
            overlaps.append(found.record())
            if found.shared:
                warnings.append(found.line)
                progress.warn(found.line)
    sets_keys = parse_feature_sets(cfg, train_store)
    all_keys = tuple(sorted({k for ks in sets_keys for k in ks}, key=FeatureKey.sort_key))

    labels, usable = train_store.labels(), train_store.valid()
    classes = store_classes(train_store) or [str(c) for c in range(int(labels.max()) + 1)]
    val_mask = carve_validation(labels, usable, 0.0 if val_store else cfg.val_fraction, seed)
    train_mask = usable & ~val_mask
    seen = set(np.unique(labels[train_mask]).tolist())
    if not seen:
        raise ProbeDataError(f"{train_store.path}: no usable training rows")

    train_bytes = (
        int(train_mask.sum()) * FeatureReader(train_store, all_keys, view_mode=cfg.view_mode).row_bytes()
    )
    preload = cfg.preload if cfg.preload is not None else train_bytes <= cfg.buffer_mb * MiB
    reader = FeatureReader(train_store, all_keys, preload=preload, view_mode=cfg.view_mode)
    sets = [feature_set(ks, {k: reader.row_shape(k) for k in all_keys}) for ks in sets_keys]
    evals = {}
    if val_store is not None:
        evals["val"] = (
            FeatureReader(val_store, all_keys, view_mode=cfg.view_mode),
            val_store.valid(),
            val_store.labels(),
        )
    elif val_mask.any():
        evals["val"] = (reader, val_mask, labels)
    if test_store is not None:
        evals["test"] = (FeatureReader(test_store, all_keys), test_store.valid(), test_store.labels())
    for split, (r, mask, y) in evals.items():
        absent = sorted(set(np.unique(y[mask]).tolist()) - seen)
        if absent:
            names = ", ".join(f"{c} ({classes[c] if c < len(classes) else '?'})" for c in absent[:5])
            raise ProbeDataError(f"{r.store.path}: {split} has classes with no training rows: {names}")
    # one pass over the training store: NaN/inf check of every usable row (validation rows
    # included) and the standardization statistics of the training rows
    norms = fit_standardizers(reader, train_mask, cfg.standardize, check_mask=usable)
    for split, (r, mask, _) in evals.items():
        if r is not reader:
            check_finite(r, mask, split)
    return ProbeData(
        train_store,
        val_store,
        test_store,
        labels,
        train_mask,
        classes,
        reader,
        sets,
        evals,
        norms,
        warnings,
        overlaps,
    )


def train_heads(cfg: ProbeConfig, data: ProbeData, scores: Scores, device, world) -> None:
    """Train the gradient-trained grid in one pass (DDP across ranks) and score it (rank 0)."""
    seed, reader, n_train = cfg.training.seed, data.reader, int(data.train_mask.sum())
    specs = grid_specs(cfg, data.sets)
    window_rows = max(cfg.training.batch_size, cfg.buffer_mb * MiB // (2 * reader.row_bytes()))
    if world.size > 1:  # ranks take whole windows in turn: give each rank several
        window_rows = max(1, min(window_rows, n_train // (8 * world.size)))
    per_rank = max(1, cfg.training.batch_size // world.size)
    settings = dataclasses.replace(cfg.training, batch_size=per_rank)
    modules = [build_member(s, len(data.classes), seed) for s in specs]
    grid = Grid(specs, data.sets, modules, settings, device)
    ddp = torch.nn.parallel.DistributedDataParallel(grid) if world.size > 1 else None
    steps = steps_per_epoch(
        epoch_windows(reader, data.train_mask, window_rows, seed, 0), per_rank, world.size
    )
    if steps == 0:
        raise ProbeDataError(
            f"{n_train} training rows make no full batch of {cfg.training.batch_size}; lower --batch-size"
        )

    def epochs(e):
        return stream_batches(
            reader,
            data.train_mask,
            data.labels,
            batch=per_rank,
            window_rows=window_rows,
            seed=seed,
            epoch=e,
            rank=world.rank,
            world=world.size,
        )

    val_by_epoch = []

    def score_validation(
        epoch: int,
    ) -> None:  # the per-epoch history's validation top-1, every member (rank 0)
        if world.is_main and "val" in data.evals:
            r, mask, y = data.evals["val"]
            top, truth = predict_grid(grid, eval_batches(r, mask, y), data.norms, device, k=1)
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
    scores.history += timing.pop("history")
    scores.timing["train"] = {
        **timing,
        "window_rows": int(window_rows),
        "preload": reader.preload,
        "steps_per_epoch": steps,
    }
    if not world.is_main:
        return
    for split, (r, mask, y) in data.evals.items():
        top, scores.truth[split] = predict_grid(grid, eval_batches(r, mask, y), data.norms, device)
        scores.tops[split] += [top[:, i] for i in range(len(specs))]
    scores.members += [
        {**s.describe(), "val_top1_by_epoch": [v[i] for v in val_by_epoch]} for i, s in enumerate(specs)
    ]
    scores.modules += [grid.member(i) for i in range(len(specs))]


def select(members: list[dict], has_val: bool) -> int:
    """The member with the best validation top-1 (the first on ties); test is never looked at."""
    if has_val:
        return max(range(len(members)), key=lambda i: (members[i]["val"]["top1"], -i))
    if len(members) == 1:
        return 0
    raise ProbeDataError(
        f"{len(members)} grid members but no validation rows to choose among them; set --val-fraction or --val"
    )


def _jsonable_config(cfg: ProbeConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def validation_note(cfg: ProbeConfig, data: ProbeData, has_val: bool) -> str:
    """Where validation came from, and which view of a K-view store it scores."""
    if not has_val:
        return "none"
    where = (
        "store"
        if data.val_store
        else f"{cfg.val_fraction:.0%} of train, class-stratified, seed {cfg.training.seed}"
    )
    views = data.evals["val"][0].store.views
    if views > 1:  # evaluation reads one view per row (eval_batches) unless the views are averaged
        where += (
            f"; scored on the mean of its {views} views"
            if cfg.view_mode == "mean"
            else f"; scored on view 0 of its {views}"
        )
    return where


def write_outputs(
    cfg: ProbeConfig, data: ProbeData, scores: Scores, started: float, log_file: Path | None = None
) -> dict:
    members, evals, n_classes = scores.members, data.evals, len(data.classes)
    for i, m in enumerate(members):
        for split in evals:
            m[split] = accuracy(scores.tops[split][i], scores.truth[split])
    selected = select(members, "val" in evals)
    train_store = data.train_store
    name = cfg.name or _default_name(cfg, train_store)
    out_dir = Path(cfg.results)
    chosen = members[selected]
    stores = {"train": store_summary(train_store, int(data.train_mask.sum()))}
    for split, store in (("val", data.val_store), ("test", data.test_store)):
        if store is not None:
            stores[split] = store_summary(store, int(evals[split][1].sum()))
    result = {
        "format": RESULTS_FORMAT,
        "version": __version__,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": _jsonable_config(cfg),
        "stores": stores,
        "validation": validation_note(cfg, data, "val" in evals),
        "classes": data.classes,
        "members": members,
        "selected": selected,
        "head": chosen,
        "timing": scores.timing,
        "history": scores.history,
        "invocation": invocation(),  # the command and its resolved options: `--config` this file to rerun it
        "log_file": None if log_file is None else str(log_file),
        "warnings": data.warnings,
        "overlap": data.overlaps,
    }
    for split in evals:
        result[split] = report(scores.tops[split][selected], scores.truth[split], n_classes)
    if (
        "test" in evals
    ):  # the selected member's top-1 on each scored test row, keyed by dataset position (`analysis diff` pairs runs on it)
        result["predictions"] = write_predictions(
            out_dir / f"{name}.predictions.npz",
            data.test_store.index()[evals["test"][1]],
            scores.truth["test"],
            scores.tops["test"][selected][:, 0],
        )
    module = scores.modules[selected]
    if module is not None:
        head_path = out_dir / f"{name}.head.pt"
        chosen_set = next(fs for fs in data.sets if fs.name == chosen["feature_set"])
        meta = {
            "head": "linear" if chosen["head"] == "logreg" else chosen["head"],
            "options": chosen.get("options", {}),
            "features": chosen["features"],
            "in_shape": list(chosen_set.in_shape),
            "row_shapes": [list(s) for s in chosen_set.row_shapes],
            "num_classes": n_classes,
            "classes": data.classes,
            "compatible": stores["train"]["key"],
            "trained_as": chosen,
            "results": f"{name}.json",
            "train_store": stores["train"]["path"],
            "version": __version__,
        }
        save_head(head_path, module, meta, data.norms)
        result["head_file"] = str(head_path)
    result["timing"]["total_seconds"] = round(time.perf_counter() - started, 3)
    write_json(out_dir / f"{name}.json", result)
    append_row(out_dir / "probe_results.csv", table_row(cfg, train_store, result))
    return result


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
    }


def _fmt(x) -> str:
    return "" if x is None else f"{x:.2f}"


def _default_name(cfg: ProbeConfig, store: FeatureStore) -> str:
    return f"{'-'.join(cfg.heads)}_{store.path.name.removesuffix('.zarr')}"


def _gather(
    reader: FeatureReader, mask: np.ndarray, labels: np.ndarray, norms: dict, fs
) -> tuple[np.ndarray, np.ndarray]:
    """The masked rows of one feature set, standardized and flattened, in memory: ((n, D), (n,))."""
    xs, ys = [], []
    for values, y, _ in eval_batches(reader, mask, labels):
        xs.append(head_inputs(values, norms, [fs], "cpu")[0].flatten(1).numpy())
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def run_baselines(cfg: ProbeConfig, data: ProbeData, scores: Scores, heads: list[str]) -> None:
    """logreg (one member per C) and knn (one member per k) for every feature set."""
    reader, train_mask, labels, evals, norms = (
        data.reader,
        data.train_mask,
        data.labels,
        data.evals,
        data.norms,
    )
    n_classes = len(data.classes)
    members, modules, tops, truth = scores.members, scores.modules, scores.tops, scores.truth
    for fs in data.sets:
        split_x = {s: _gather(*evals[s], norms, fs) for s in evals}
        for s in evals:
            truth.setdefault(s, split_x[s][1])
        if "logreg" in heads:
            x, y = _gather(reader, train_mask, labels, norms, fs)
            for c in cfg.logreg_c:
                model, converged = baselines.fit_logreg(x, y, c, cfg.training.seed)
                weight, bias = baselines.logreg_weights(model, n_classes)
                for s in evals:
                    tops[s].append(baselines.logreg_top(model, split_x[s][0], n_classes))
                members.append(
                    {
                        "head": "logreg",
                        "C": c,
                        "converged": converged,
                        "features": [k.to_dict() for k in fs.keys],
                        "feature_set": fs.name,
                    }
                )
                head = LinearHead((int(np.prod(fs.in_shape)), 1, 1), n_classes)
                head.load_state_dict(linear_state(weight, bias))
                modules.append(head)
        if "knn" in heads:
            banks = {s: baselines.KnnBank(split_x[s][0], max(cfg.knn_k)) for s in evals}
            for values, yy, _ in eval_batches(reader, train_mask, labels):
                bank = head_inputs(values, norms, [fs], "cpu")[0].flatten(1).numpy()
                for b in banks.values():
                    b.add(bank, yy)
            for k in cfg.knn_k:
                for s in evals:
                    tops[s].append(banks[s].top(k, n_classes, cfg.knn_temperature))
                members.append(
                    {
                        "head": "knn",
                        "k": k,
                        "temperature": cfg.knn_temperature,
                        "features": [k_.to_dict() for k_ in fs.keys],
                        "feature_set": fs.name,
                    }
                )
                modules.append(None)
