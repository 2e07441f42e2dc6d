"""Finding a dataset's folder under --data-root and naming what is missing.

Every reader states the folder it expects (its official or torchvision name) and the files it
reads; a missing one is one DataError naming the path and the layout expected.
"""

from __future__ import annotations

from pathlib import Path

from extract.data.sources import DataError


def dataset_folder(
    dataset: str, root: Path | None, folders: tuple[str, ...], marker: str, layout: str, exact: bool = False
) -> Path:
    """The dataset's folder: `root/f` for the first of `folders` that holds `marker`, or `root`
    itself when it does (with `exact`, only if it bears the first folder's name: torchvision's
    readers find a dataset by its folder name). Raises DataError naming the layout otherwise."""
    if root is None:
        raise DataError(f"--data {dataset} needs --data-root; expected layout: {layout}")
    root = Path(root)
    if not root.exists():
        raise DataError(f"{dataset}: --data-root {root} does not exist; expected layout: {layout}")
    candidates = [root / f for f in folders]
    if not exact or root.name == folders[0]:
        candidates.append(root)
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    raise DataError(f"{dataset}: no {folders[0]}/{marker} under {root}; expected layout: {layout}")


def require(dataset: str, folder: Path, relpaths: list[str], layout: str) -> None:
    """Every annotation file or folder a split needs, before anything is parsed."""
    for rel in relpaths:
        if not (folder / rel).exists():
            raise DataError(f"{dataset}: missing {folder / rel}; expected layout: {layout}")


def read_table(dataset: str, path: Path, columns: int) -> list[list[str]]:
    """A whitespace-separated text file of at least `columns` fields a line (the last field
    keeps its spaces); blank lines skipped; a short line is a DataError naming it."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=columns - 1)
            if len(parts) < columns:
                raise DataError(
                    f"{dataset}: {path} line {n}: expected {columns} fields, got {line.strip()!r}"
                )
            rows.append([p.strip() for p in parts])
    return rows
