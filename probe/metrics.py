"""Accuracy numbers from top-k predictions: top-1, top-5, per class, confusion matrix."""

from __future__ import annotations

import numpy as np


def accuracy(top: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top: (n, k) class indices, best first; labels: (n,). Top-1 and top-min(5, k), in percent."""
    if len(labels) == 0:
        return {"top1": float("nan"), "top5": float("nan")}
    hit = top[:, :5] == labels[:, None]
    return {"top1": 100.0 * float(hit[:, 0].mean()), "top5": 100.0 * float(hit.any(axis=1).mean())}


def confusion(pred: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    out = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(out, (labels, pred), 1)
    return out


def per_class_accuracy(matrix: np.ndarray) -> list[float | None]:
    """Recall of each class in percent (None for a class with no rows)."""
    totals = matrix.sum(axis=1)
    return [100.0 * float(matrix[i, i]) / float(n) if n else None for i, n in enumerate(totals)]


def topk_from_scores(scores: np.ndarray, k: int = 5) -> np.ndarray:
    """(n, classes) scores -> (n, min(k, classes)) class indices, best first (ties: lower index)."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def report(top: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """Everything the results file holds for one evaluated split."""
    matrix = confusion(top[:, 0], labels, classes)
    return {
        **accuracy(top, labels),
        "rows": int(len(labels)),
        "per_class": per_class_accuracy(matrix),
        "confusion": matrix.tolist(),
    }
