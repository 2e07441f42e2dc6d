"""CIFAR-10 and CIFAR-100 in their official python-pickle layout, read without trusting the pickles.

The release's batches are Python 2 pickles of dicts: b"data" a uint8 array (N, 3072) holding each
image as 1024 red, 1024 green then 1024 blue values (row-major 32 x 32), the labels a list of
ints. They are read with an Unpickler that builds only dicts, lists, strings, bytes, numbers and
numpy's uint8 arrays: any other global in a file is refused (a pickle can otherwise run code).
Ids are `<split>/<index>` in the file's order (CIFAR-10's train is data_batch_1..5 in turn).
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from extract.data.find_root import dataset_folder, require
from extract.data.sources import DataError, ImageSource

SIDE = 32
VALUES = 3 * SIDE * SIDE
CIFAR100_LEVELS = ("fine", "coarse")

LAYOUTS = {
    "cifar10": "ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (or ROOT = that folder)",
    "cifar100": "ROOT/cifar-100-python/{train, test, meta} (or ROOT = that folder)",
}
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES = {
    "cifar10": {
        "train": [f"data_batch_{k}" for k in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
    },
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta"},
}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What a protocol-2 pickle written by Python 3 calls to rebuild bytes (`_codecs.encode`),
    limited to the one encoding it uses."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray

    reconstruct = multiarray._reconstruct
    # numpy 1.x writes numpy.core.multiarray, numpy 2.x numpy._core.multiarray: the same function
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class SafeUnpickler(pickle.Unpickler):
    """Builds containers, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        allowed = _numpy_globals()
        allowed[("_codecs", "encode")] = _latin1_encode
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def safe_load(path: Path) -> dict:
    """A CIFAR pickle as a dict, or a one-line DataError naming the file."""
    try:
        obj = SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as e:
        raise DataError(f"{path}: not a CIFAR python batch ({str(e).strip() or type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR python batch (holds a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _text(x) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def _field(path: Path, batch: dict, key: str):
    if key not in batch:
        raise DataError(f"{path}: no {key!r} entry (it holds: {', '.join(sorted(batch))})")
    return batch[key]


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load(path)
    data = _field(path, batch, "data")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != VALUES
    ):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array (N, {VALUES}), got {what}")
    raw = _field(path, batch, label_key)
    try:
        labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {label_key!r} must be a list of integers") from None
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} {label_key}")
    return data, labels


def _class_names(path: Path, key: str) -> list[str]:
    names = _field(path, safe_load(path), key)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: {key!r} must be a non-empty list of names")
    return [_text(n) for n in names]


def _cifar(
    name: str, root: Path | None, split: str, label_key: str, meta_key: str, source_name: str
) -> ImageSource:
    layout = LAYOUTS[name]
    folder = dataset_folder(name, root, (FOLDERS[name],), FILES[name]["meta"], layout)
    files = FILES[name][split]
    require(name, folder, [*files, FILES[name]["meta"]], layout)
    classes = _class_names(folder / FILES[name]["meta"], meta_key)
    parts = [_read_batch(folder / f, label_key) for f in files]
    data = np.concatenate([d for d, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([lab for _, lab in parts])
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(
            f"{name}: {label_key} in {folder} run outside the {len(classes)} classes of {FILES[name]['meta']}"
        )

    def load(i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(data[i].reshape(3, SIDE, SIDE).transpose(1, 2, 0)))

    ids = [f"{split}/{i}" for i in range(len(data))]
    return ImageSource(source_name, split, str(folder), ids, labels, classes, load)


def cifar10(root: Path | None, split: str, opts: dict) -> ImageSource:
    """CIFAR-10: train is data_batch_1..5 in turn (50,000), test is test_batch (10,000)."""
    return _cifar("cifar10", root, split, "labels", "label_names", "cifar10")


def cifar100(root: Path | None, split: str, opts: dict) -> ImageSource:
    """CIFAR-100 at labels=fine (100 classes) or coarse (the 20 superclasses)."""
    level = opts.get("labels", "fine")
    name = "cifar100" if level == "fine" else f"cifar100[labels={level}]"
    return _cifar("cifar100", root, split, f"{level}_labels", f"{level}_label_names", name)
