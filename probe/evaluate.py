"""Re-evaluate a saved head on a store (`python -m probe eval`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from extract.store import progress
from extract.store.overlap import check_overlap
from extract.store.location import same_location, store_location
from extract.store.schema import ROUNDING_FIELDS, describe_differences, is_store, open_complete
from probe.grid import head_inputs
from probe.metrics import report
from probe.reader import FeatureReader, ProbeDataError, check_finite, eval_batches, store_summary
from probe.results import load_head


@torch.no_grad()
def evaluate_head(
    head: str | Path, store_path: str | Path, device: str = "cpu", allow_overlap: bool = False
) -> dict:
    """Top-1/top-5, per-class accuracy and confusion matrix of a saved head on a store's valid rows.
    A store sharing images with the head's training store (when that store is still there) is
    refused unless `allow_overlap`."""
    module, meta, fs, norms = load_head(head)
    store = open_complete(store_path)
    key = store.attrs.get("key", {})
    meaning = {k: v for k, v in meta["compatible"].items() if k not in ROUNDING_FIELDS}
    diffs = describe_differences(meaning, {k: key.get(k) for k in meaning})
    rounding = describe_differences(
        {k: v for k, v in meta["compatible"].items() if k in ROUNDING_FIELDS},
        {k: key.get(k) for k in meta["compatible"] if k in ROUNDING_FIELDS},
    )
    if rounding:
        progress.warn(
            f"{store_path} was extracted with another micro-batch or device than {head} was trained on "
            f"({'; '.join(rounding)}): features agree up to float rounding"
        )
    if diffs:
        raise ProbeDataError(
            f"{store_path} holds features of another model or preprocessing than {head} was trained on: "
            f"{'; '.join(diffs[:3])}"
        )
    overlap = _overlap_with_training(meta, store, allow_overlap)
    reader = FeatureReader(store, fs.keys)
    mask, labels = store.valid(), store.labels()
    n_classes = int(meta["num_classes"])
    if (labels[mask] >= n_classes).any():
        raise ProbeDataError(f"{store_path}: labels go beyond the head's {n_classes} classes")
    check_finite(reader, mask, "evaluation")
    module.to(device)
    tops, ys = [], []
    for values, y, _ in eval_batches(reader, mask, labels):
        logits = module(head_inputs(values, norms, [fs], device)[0])
        tops.append(logits.float().topk(min(5, n_classes), dim=1).indices.cpu().numpy())
        ys.append(y)
    result = report(np.concatenate(tops), np.concatenate(ys), n_classes)
    return {
        "head": str(head),
        "store": store_summary(store, int(mask.sum())),
        "trained_as": meta.get("trained_as"),
        "overlap": overlap,
        **result,
    }


def _overlap_with_training(meta: dict, store, allow: bool) -> dict | None:
    """Check the store against the head's training store, if it still exists; warn when allowed."""
    train_path = meta.get("train_store")
    if not train_path or not is_store(train_path) or same_location(train_path, store.path):
        return None
    found = check_overlap(
        open_complete(train_path),
        store,
        allow,
        f"the head's training store ({store_location(train_path).name}) and {store.path.name}",
    )
    if found.shared:
        progress.warn(found.line)
    return found.record()
