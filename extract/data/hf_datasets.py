"""Hugging Face datasets on disk: a `save_to_disk` folder, or parquet files, read in place.

A `save_to_disk` folder (a DatasetDict of splits, or one Dataset) is memory-mapped by
`datasets.load_from_disk`; parquet files are read one row group at a time with pyarrow, their
features (ClassLabel names, Image columns) taken from the schema `datasets` wrote. Nothing is
converted or copied to a cache. Images are decoded here from the stored bytes (or a file path),
so an Image feature and a plain {"bytes", "path"} or binary column read alike. Ids are
`<split>/<row>`. Options: image=<column> (default image), label=<column> (default label).
"""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from extract.data.label_index import index_labels, optional_package, split_files
from extract.data.sources import ALL_SPLIT, DataError, ImageSource, open_image

LAYOUT = (
    "ROOT = a save_to_disk folder (dataset_dict.json and <split>/, "
    "or one Dataset's state.json: --split all), "
    "or parquet files ROOT/<split>/*.parquet, ROOT/<split>-*.parquet or ROOT/data/<split>-*.parquet"
)
DATASET = "hf"
FREE_OPTIONS = {"image": "image", "label": "label"}


def _datasets():
    return optional_package("datasets", "hf", DATASET)


def _column_error(where: str, role: str, column: str, columns: list[str]) -> DataError:
    return DataError(
        f"{DATASET}: {where} has no {role} column {column!r} (its columns: {', '.join(columns)}); "
        f"choose one with --data-opt {role}=<column>"
    )


def decode_image(value, where: str) -> Image.Image:
    """An Image feature's {"bytes", "path"}, raw bytes, or an already decoded PIL image."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return open_image(io.BytesIO(value["bytes"]))
        if value.get("path"):
            path = Path(value["path"])
            return open_image(path if path.is_absolute() or path.is_file() else Path(where) / path)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return open_image(io.BytesIO(bytes(value)))
    raise ValueError(f"holds {type(value).__name__}, not image bytes")


def _classes(
    features, label_col: str, values: list, ids: list[str], where: str
) -> tuple[np.ndarray, list[str]]:
    """ClassLabel names where the feature is one, else the values' own classes (index_labels)."""
    feature = features.get(label_col) if features is not None else None
    names = getattr(feature, "names", None)
    if not names:
        return index_labels(values, ids, where)
    labels = np.array([-1 if v is None else v for v in values], dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if len(bad):
        raise DataError(
            f"{DATASET}: {where}: image {ids[bad[0]]!r} has label {labels[bad[0]]}, "
            f"outside the {len(names)} ClassLabel names"
        )
    return labels, [str(n) for n in names]


# ---------------------------------------------------------------- save_to_disk
def _saved_folder(root: Path, split: str) -> Path | None:
    """The save_to_disk Dataset folder of the split, None when root is no save_to_disk folder."""
    if (root / "dataset_dict.json").is_file():
        try:
            splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"{DATASET}: {root / 'dataset_dict.json'} is not a DatasetDict's (no 'splits' list)"
            ) from None
        if split not in splits:
            raise DataError(
                f"{DATASET}: the DatasetDict in {root} has splits {', '.join(splits)}, not {split!r}"
            )
        return root / split
    if (root / "state.json").is_file():
        recorded = None
        try:
            recorded = json.loads((root / "state.json").read_text()).get("_split")
        except (ValueError, AttributeError):
            pass
        if split not in (ALL_SPLIT, recorded):
            raise DataError(
                f"{DATASET}: {root} is one saved Dataset (split {recorded}), "
                f"read as --split {recorded or ALL_SPLIT}, not {split!r}"
            )
        return root
    if (root / split / "state.json").is_file():
        return root / split
    return None


def _from_saved(folder: Path, split: str, image_col: str, label_col: str) -> ImageSource:
    datasets = _datasets()
    try:
        ds = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(
            f"{DATASET}: {folder} is not a readable save_to_disk folder ({str(e).strip().splitlines()[0]})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(
            f"{DATASET}: {folder} holds a DatasetDict; point --data-root at it and choose --split"
        )
    columns = list(ds.column_names)
    for role, column in (("image", image_col), ("label", label_col)):
        if column not in columns:
            raise _column_error(str(folder), role, column, columns)
    table = ds.with_format("arrow")
    ids = [f"{split}/{i}" for i in range(len(ds))]
    labels, classes = _classes(ds.features, label_col, table[label_col].to_pylist(), ids, str(folder))
    images = table.select_columns([image_col])

    def load(i: int) -> Image.Image:
        return decode_image(images[i].column(0)[0].as_py(), str(folder))

    return ImageSource(DATASET, split, str(folder), ids, labels, classes, load)


# ---------------------------------------------------------------- parquet
def parquet_files(root: Path, split: str) -> tuple[list[Path], str]:
    candidates = [
        (root / split, "*.parquet"),
        (root, f"{split}-*.parquet"),
        (root / "data", f"{split}-*.parquet"),
    ]
    if split == ALL_SPLIT:
        candidates.append((root, "*.parquet"))
    found = split_files(candidates)
    if found:
        return found
    held = sorted(p.name for p in root.iterdir())[:6]
    raise DataError(
        f"{DATASET}: no save_to_disk folder and no {split} parquet files in {root} "
        f"(it holds: {', '.join(held) or 'nothing'}); "
        f"expected layout: {LAYOUT}"
    )


class ParquetImages:
    """Image i from its file's row group, read on demand (the last one kept), per process;
    threads (check-data's) share the files and the kept group under a lock."""

    def __init__(self, files: list[Path], column: str, starts: list[tuple[int, int, int]], where: str):
        self.files, self.column, self.starts, self.where = files, column, starts, where
        self.first = np.array([s[0] for s in starts], np.int64)
        self.pid, self.handles, self.cached, self.lock = None, {}, (None, None), threading.Lock()

    def _group(self, k: int):
        import pyarrow.parquet as pq

        with self.lock:
            if self.pid != os.getpid():
                self.pid, self.handles, self.cached = os.getpid(), {}, (None, None)
            if self.cached[0] != k:
                _, file_index, group = self.starts[k]
                if file_index not in self.handles:
                    self.handles[file_index] = pq.ParquetFile(self.files[file_index])
                self.cached = (
                    k,
                    self.handles[file_index].read_row_group(group, columns=[self.column]).column(0),
                )
            return self.cached[1]

    def __call__(self, i: int) -> Image.Image:
        k = int(np.searchsorted(self.first, i, side="right") - 1)
        return decode_image(self._group(k)[i - self.starts[k][0]].as_py(), self.where)

    def __getstate__(self):
        return {**self.__dict__, "pid": None, "handles": {}, "cached": (None, None), "lock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, lock=threading.Lock())


def _from_parquet(root: Path, split: str, image_col: str, label_col: str) -> ImageSource:
    datasets = _datasets()
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, location = parquet_files(root, split)
    starts, values, features, n = [], [], None, 0
    for f_index, path in enumerate(files):
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{DATASET}: {path} is not a readable parquet file ({e})") from None
        columns = pf.schema_arrow.names
        for role, column in (("image", image_col), ("label", label_col)):
            if column not in columns:
                raise _column_error(str(path), role, column, columns)
        if features is None:
            features = datasets.Features.from_arrow_schema(pf.schema_arrow)
        for group in range(pf.metadata.num_row_groups):
            starts.append((n, f_index, group))
            n += pf.metadata.row_group(group).num_rows
        values += pf.read(columns=[label_col]).column(0).to_pylist()
    ids = [f"{split}/{i}" for i in range(n)]
    labels, classes = _classes(features, label_col, values, ids, location)
    return ImageSource(
        DATASET, split, location, ids, labels, classes, ParquetImages(files, image_col, starts, str(root))
    )


def hf(root: Path | None, split: str, opts: dict) -> ImageSource:
    """A Hugging Face dataset saved with save_to_disk, or its parquet files."""
    if root is None:
        raise DataError(f"--data {DATASET} needs --data-root; expected layout: {LAYOUT}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{DATASET}: --data-root {root} is not a folder; expected layout: {LAYOUT}")
    image_col, label_col = opts.get("image", FREE_OPTIONS["image"]), opts.get("label", FREE_OPTIONS["label"])
    folder = _saved_folder(root, split)
    if folder is not None:
        return _from_saved(folder, split, image_col, label_col)
    return _from_parquet(root, split, image_col, label_col)
