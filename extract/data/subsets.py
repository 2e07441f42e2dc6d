"""Subsets of a dataset: class subsets, image lists, a per-class sampler and a random limit.

Applied in that order to any registered dataset:
- `classes_file`: keep the classes it names (identifiers such as synsets, or readable names),
  one per line; labels are renumbered 0..K-1 in the dataset's own class order (ImageNet-100 style).
- `list_file`: keep the images it names, one per line, by id (`n01440764/n01440764_10026.JPEG`)
  or file name (`n01440764_10026.JPEG`, as in the 1% and 10% label-fraction lists).
- `per_class`: N images of each class, drawn by a permutation seeded with `seed`.
- `limit`: a seeded random subset of what is left.
Every row set comes back sorted, so a store's rows follow the dataset's order. Lines that are
blank or start with '#' are skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.data.sources import DataError, ImageSource, subset_indices


@dataclass(frozen=True)
class Subset:
    classes_file: Path | None = None
    list_file: Path | None = None
    per_class: int | None = None
    limit: int | None = None
    seed: int = 0

    @property
    def selective(self) -> bool:
        """True when a file or the per-class sampler picks the rows (beyond --limit)."""
        return self.classes_file is not None or self.list_file is not None or self.per_class is not None


def read_list(path: Path, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    with open(path, encoding="utf-8") as f:
        entries = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise DataError(f"{what} file {path} names nothing")
    return entries


def restrict_classes(source: ImageSource, path: Path) -> tuple[ImageSource, np.ndarray]:
    """(the source relabelled to the classes named in `path`, numbered in the source's class
    order, other images labelled -1; the rows of the kept classes). Rows keep their dataset
    index, so an image's noise and views are the same with or without a class subset."""
    wanted = read_list(path, "class list")
    lookup = {c: k for k, c in enumerate(source.classes)}
    lookup.update({n: k for k, n in enumerate(source.names()) if n not in lookup})
    missing = [c for c in wanted if c not in lookup]
    if missing:
        raise DataError(
            f"class list {path}: {len(missing)} of {len(wanted)} entries are not classes of {source.name}, "
            f"e.g. {missing[0]!r}"
        )
    keep = sorted({lookup[c] for c in wanted})
    renumber = np.full(len(source.classes), -1, dtype=np.int64)
    renumber[keep] = np.arange(len(keep))
    labels = renumber[source.labels]
    names = source.names()
    restricted = dataclasses.replace(
        source,
        labels=labels,
        classes=[source.classes[k] for k in keep],
        class_names=[names[k] for k in keep] if source.class_names is not None else None,
    )
    return restricted, np.flatnonzero(labels >= 0)


def listed_rows(source: ImageSource, path: Path) -> np.ndarray:
    """Rows of the images `path` names, by id or by file name; every entry must name one image."""
    wanted = read_list(path, "image list")
    by_id = {i: k for k, i in enumerate(source.ids)}
    by_name: dict[str, list[int]] = {}
    for k, i in enumerate(source.ids):
        by_name.setdefault(i.rsplit("/", 1)[-1], []).append(k)
    rows, missing, ambiguous = set(), [], []
    for entry in wanted:
        if entry in by_id:
            rows.add(by_id[entry])
        elif len(hits := by_name.get(entry.rsplit("/", 1)[-1], [])) == 1:
            rows.add(hits[0])
        else:
            (ambiguous if hits else missing).append(entry)
    if missing:
        raise DataError(
            f"image list {path}: {len(missing)} of {len(wanted)} entries name no image of {source.name} "
            f"{source.split} ({source.location}), e.g. {missing[0]!r}"
        )
    if ambiguous:
        raise DataError(
            f"image list {path}: {ambiguous[0]!r} matches several images; give the id (folder/file) instead"
        )
    return np.array(sorted(rows), dtype=np.int64)


def per_class_rows(labels: np.ndarray, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to n rows of each class among `rows`: the first n of each class in one seeded
    permutation, so a larger n keeps every row a smaller n chose."""
    if n < 1:
        raise DataError(f"--per-class must be positive, got {n}")
    order = rows[np.random.default_rng(seed).permutation(len(rows))]
    taken: dict[int, int] = {}
    keep = []
    for r in order:
        c = int(labels[r])
        if taken.get(c, 0) < n:
            taken[c] = taken.get(c, 0) + 1
            keep.append(r)
    return np.sort(np.array(keep, dtype=np.int64))


def apply_subset(source: ImageSource, subset: Subset) -> tuple[ImageSource, np.ndarray]:
    """(the source, class-restricted if asked; the sorted rows of it to extract)."""
    rows = np.arange(len(source))
    if subset.classes_file is not None:
        source, rows = restrict_classes(source, subset.classes_file)
    if subset.list_file is not None:
        listed = listed_rows(source, subset.list_file)
        if subset.classes_file is not None and not np.isin(listed, rows).all():
            outside = source.ids[int(listed[~np.isin(listed, rows)][0])]
            raise DataError(
                f"image list {subset.list_file} names {outside!r}, "
                f"outside the classes of {subset.classes_file}"
            )
        rows = listed
    if subset.per_class is not None:
        rows = per_class_rows(source.labels, rows, subset.per_class, subset.seed)
    return source, rows[subset_indices(len(rows), subset.limit, subset.seed)]


def rows_digest(source: ImageSource, rows: np.ndarray) -> str:
    """sha256 over the chosen rows' ids: what a list or class file selected, whatever its path."""
    return hashlib.sha256("\n".join(source.ids[i] for i in rows).encode()).hexdigest()
