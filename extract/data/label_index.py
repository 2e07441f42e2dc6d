"""What the WebDataset and Hugging Face readers share: their optional package, the search for a
split's files, and class lists made from raw label values."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from extract.data.sources import DataError


def optional_package(module: str, extra: str, dataset: str):
    """Import an optional package, or a one-line DataError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"--data {dataset} needs the {module.split('.')[0]} package: pip install 'diffprobe[{extra}]'"
        ) from None


def split_files(candidates: list[tuple[Path, str]]) -> tuple[list[Path], str] | None:
    """The files of the first (folder, glob pattern) that matches any, sorted by name, and where
    they were found; None when none matches."""
    for folder, pattern in candidates:
        found = sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []
        if found:
            return found, str(folder / pattern)
    return None


def index_labels(values: list, ids: list[str], where: str) -> tuple[np.ndarray, list[str]]:
    """Raw labels -> (label indices, class names). Integers are kept as they are, classes
    "0".."max" (so every split of a dataset numbers its classes alike, whichever it lacks);
    strings become the sorted distinct values. A missing, negative or mixed label names its image."""
    kinds = set()
    for value, i in zip(values, ids):
        if value is None:
            raise DataError(f"{where}: image {i!r} has no label")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
            raise DataError(f"{where}: image {i!r} has label {value!r}; labels must be integers or strings")
        if not isinstance(value, str) and value < 0:
            raise DataError(f"{where}: image {i!r} has the negative label {value}")
        kinds.add(str if isinstance(value, str) else int)
    if len(kinds) > 1:
        first = next(i for v, i in zip(values, ids) if isinstance(v, str))
        raise DataError(f"{where}: labels mix integers and strings (e.g. image {first!r}); use one kind")
    if kinds == {str}:
        distinct = sorted(set(values))
        index = {v: k for k, v in enumerate(distinct)}
        return np.array([index[v] for v in values], dtype=np.int64), distinct
    labels = np.array(values, dtype=np.int64)
    return labels, [str(k) for k in range(int(labels.max()) + 1 if len(labels) else 0)]
