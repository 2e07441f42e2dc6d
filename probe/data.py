"""A probe run's inputs: open and cross-check the stores, choose the feature sets, carve
validation, refuse bad features and fit standardization. `prepare(config)` gives them all."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.store import progress
from extract.store.overlap import check_overlap
from extract.store.schema import FeatureKey, FeatureStore, open_complete, parse_feature_set, pool_label
from probe.config import ProbeConfig
from probe.grid import FeatureSet, feature_set
from probe.reader import (
    FeatureReader,
    ProbeDataError,
    Standardizer,
    carve_validation,
    check_compatible,
    check_finite,
    fit_standardizers,
    store_classes,
)
from probe.select import chosen_features

MiB = 1 << 20


@dataclass(frozen=True)
class Split:
    """The rows of one split: a reader over its store, which rows count, and every row's label."""

    name: str  # "train", "val" or "test"
    reader: FeatureReader
    mask: np.ndarray  # (n_rows,) bool: the rows trained on or scored
    labels: np.ndarray  # (n_rows,) class indices of all the store's rows

    @property
    def rows(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class ProbeData:
    """The checked inputs of one probe run: stores, splits, feature sets, standardization."""

    train_store: FeatureStore
    val_store: FeatureStore | None
    test_store: FeatureStore | None
    classes: list[str]
    # the training rows; its reader covers every key any feature set uses
    train: Split
    sets: list[FeatureSet]
    # the splits scored, by name: "val" (a store, or carved from train) and "test"
    evals: dict[str, Split]
    norms: dict[FeatureKey, Standardizer]
    # e.g. stores paired across micro-batch or device
    warnings: list[str]
    # each pair of splits checked for shared images
    overlaps: list[dict]


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
            f"{store.path} has no features with t in {list(cfg.ts) or 'any'}, "
            f"b in {list(cfg.blocks) or 'any'}, pool in {[pool_label(p) for p in cfg.pools] or 'any'}; "
            f"it holds: {held}"
        )
    return [(k,) for k in keys]


def _check_stores(cfg: ProbeConfig, named: list[tuple[str, FeatureStore]]) -> tuple[list[str], list[dict]]:
    """Warnings (stores paired across micro-batch or device, shared images) and the overlap
    record of each pair of splits; raises when two splits share images unless allowed."""
    (_, train_store), others = named[0], named[1:]
    warnings, overlaps = [], []
    for _, other in others:
        warnings += check_compatible(train_store, other)
    for i, (split_a, a) in enumerate(named):  # no image may be in two splits unless allowed
        for split_b, b in named[i + 1 :]:
            found = check_overlap(
                a, b, cfg.allow_overlap, f"{split_a} ({a.path.name}) and {split_b} ({b.path.name})"
            )
            overlaps.append(found.record())
            if found.shared:
                warnings.append(found.line)
                progress.warn(found.line)
    return warnings, overlaps


def prepare(cfg: ProbeConfig) -> ProbeData:
    """Open and cross-check the stores, carve validation, refuse bad features, fit standardization."""
    seed = cfg.training.seed
    train_store = open_complete(cfg.train)
    val_store = open_complete(cfg.val) if cfg.val else None
    test_store = open_complete(cfg.test) if cfg.test else None
    named = [
        (split, store)
        for split, store in (("train", train_store), ("val", val_store), ("test", test_store))
        if store is not None
    ]
    warnings, overlaps = _check_stores(cfg, named)
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
        val_reader = FeatureReader(val_store, all_keys, view_mode=cfg.view_mode)
        evals["val"] = Split("val", val_reader, val_store.valid(), val_store.labels())
    elif val_mask.any():
        evals["val"] = Split("val", reader, val_mask, labels)
    if test_store is not None:
        evals["test"] = Split(
            "test", FeatureReader(test_store, all_keys), test_store.valid(), test_store.labels()
        )
    for split in evals.values():
        absent = sorted(set(np.unique(split.labels[split.mask]).tolist()) - seen)
        if absent:
            names = ", ".join(f"{c} ({classes[c] if c < len(classes) else '?'})" for c in absent[:5])
            raise ProbeDataError(
                f"{split.reader.store.path}: {split.name} has classes with no training rows: {names}"
            )
    # one pass over the training store: NaN/inf check of every usable row (validation rows
    # included) and the standardization statistics of the training rows
    norms = fit_standardizers(reader, train_mask, cfg.standardize, check_mask=usable)
    for split in evals.values():
        if split.reader is not reader:
            check_finite(split.reader, split.mask, split.name)
    return ProbeData(
        train_store=train_store,
        val_store=val_store,
        test_store=test_store,
        classes=classes,
        train=Split("train", reader, train_mask, labels),
        sets=sets,
        evals=evals,
        norms=norms,
        warnings=warnings,
        overlaps=overlaps,
    )
