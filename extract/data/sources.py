"""Image sources for extraction and guided-diffusion's preprocessing.

A source lists its images (ids, labels, class names) cheaply and loads one image on
demand; `FeatureInput` turns it into model inputs. The generic sources (an image folder,
an HDF5 file, Fashion-MNIST) live here; `extract.data.registry` registers them beside the
paper's datasets, and `extract.data.subsets` selects rows of any of them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

# DataError: shared by every stage, defined in the schema
from extract.store.schema import CONTENT_BYTES, DataError  # noqa: F401

FASHION_MNIST_ENV = "FASHION_MNIST_DIR"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})  # PIL modes read as one channel
PREPROCESSING = (
    "guided-diffusion center crop: halve (box) while short side >= 2s, bicubic short side to s, "
    "center crop; x/127.5-1"
)


IMAGEFOLDER_LAYOUT = "ROOT/<split>/<class>/<image> (or ROOT/<class>/<image>, read as --split all)"
ALL_SPLIT = "all"
HDF5_LAYOUT = "ROOT = a .h5 file (or a folder of <split>.h5): images (N,H,W[,C]) uint8, labels (N,)"
FASHION_MNIST_LAYOUT = (
    "IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz in ROOT, "
    "$FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist"
)

# 134M rows: far beyond ImageNet-21k, far below what would exhaust memory for labels
MAX_HDF5_IMAGES = 1 << 27
MAX_IMAGE_VALUES = 1 << 28  # one image of at most 268M values (16k x 16k RGB)


@dataclass
class ImageSource:
    """Images by position: ids[i], labels[i], and load(i) -> PIL image.

    `classes` are the class identifiers in label order (ImageNet's synsets, folder names);
    `class_names` the readable names where the dataset has them. `paths` lists each
    image's file for sources made of files (None for HDF5 and IDX arrays)."""

    name: str
    split: str
    location: str
    ids: list[str]
    labels: np.ndarray
    classes: list[str]
    loader: Callable[[int], Image.Image] = field(repr=False)
    paths: list[Path] | None = field(default=None, repr=False)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def names(self) -> list[str]:
        return list(self.class_names) if self.class_names is not None else list(self.classes)

    def class_counts(self, rows: np.ndarray | None = None) -> list[int]:
        labels = self.labels if rows is None else self.labels[rows]
        # -1: outside a class subset
        return np.bincount(labels[labels >= 0], minlength=len(self.classes)).tolist()

    def load(self, i: int) -> Image.Image:
        return self.loader(i)

    def fingerprint(self) -> str:
        """sha256 over the source name, split, ids, labels and class names (not pixel content)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.split, self.classes]).encode())
        h.update("\n".join(self.ids).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()


# ---------------------------------------------------------------- preprocessing
def _to_8bit(img: Image.Image) -> Image.Image:
    """Bring 16-bit and float images to 8 bits by value range, not by clipping."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8))
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return img


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    img = _to_8bit(img)
    if img.mode in ("P", "PA"):  # palette: through RGBA so a transparency key is honoured
        img = img.convert("RGBA")
    if channels == 1:
        return img.convert("L")
    return img.convert("RGB")  # L, LA, RGBA, CMYK, YCbCr ... -> RGB (alpha dropped)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """guided-diffusion's center crop: halve with a box filter while the short side is at
    least 2*size (cheap anti-aliasing), bicubic-resize the short side to size, crop the centre."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.Resampling.BICUBIC)
    left = (img.size[0] - size) // 2
    top = (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def preprocess(img: Image.Image, size: int, channels: int) -> torch.Tensor:
    """PIL image -> float32 (channels, size, size) in [-1, 1]; grayscale replicated to RGB."""
    arr = np.asarray(center_crop(to_mode(img, channels), size), dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def content_digest(img: Image.Image) -> np.ndarray:
    """BLAKE2b-128 of an image's decoded pixels, mode and size, as (16,) uint8: the same image
    stored under two names (or two splits) has one digest, whatever its file is called."""
    h = hashlib.blake2b(digest_size=CONTENT_BYTES)
    h.update(f"{img.mode} {img.size[0]}x{img.size[1]}\n".encode())
    h.update(img.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


class FeatureInput(torch.utils.data.Dataset):
    """Item i -> (dataset index, image tensor, error text, pixel digest (16,) uint8). A failure to
    read an image is returned as text (never raised in a worker), so the caller decides: stop or
    skip; its digest is zeros.

    The tensor is (C, S, S), or with an augmentation (views, C, S, S): view v of image i is
    `augment(img, seed, i, v, S)` then the center crop, so it depends on (seed, i, v) alone."""

    def __init__(
        self, source: ImageSource, size: int, channels: int, augment=None, views: int = 1, seed: int = 0
    ):
        self.source, self.size, self.channels = source, size, channels
        self.augment, self.views, self.seed = augment, views, seed

    def __len__(self) -> int:
        return len(self.source)

    def _tensor(self, i: int) -> tuple[torch.Tensor, np.ndarray]:
        img = self.source.load(i)
        digest = content_digest(img)
        if self.augment is None:
            return preprocess(img, self.size, self.channels), digest
        img = to_mode(img, self.channels)  # crops and flips commute with the per-pixel conversion
        views = [
            preprocess(self.augment(img, self.seed, i, v, self.size), self.size, self.channels)
            for v in range(self.views)
        ]
        return torch.stack(views), digest

    def __getitem__(self, i: int):
        try:
            x, digest = self._tensor(i)
            return i, x, "", torch.from_numpy(digest)
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad image
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            shape = (
                (self.channels, self.size, self.size)
                if self.augment is None
                else (self.views, self.channels, self.size, self.size)
            )
            error = f"cannot read image {self.source.ids[i]!r} ({self.source.location}): {reason}"
            return i, torch.zeros(shape), error, torch.zeros(CONTENT_BYTES, dtype=torch.uint8)


# ---------------------------------------------------------------- sources
def open_image(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img.copy() if img.mode != "P" else img.convert("RGBA")


def imagefolder(root: Path | None, split: str) -> ImageSource:
    """root/<split>/<class>/<image>, or root/<class>/<image> as split "all"; classes sorted by name.
    A split with no folder of its own is an error, never the root: a train and a test store read
    from one folder would hold the same images."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if root is None:
        raise DataError(f"--data imagefolder needs --data-root; expected layout: {IMAGEFOLDER_LAYOUT}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}; expected layout: {IMAGEFOLDER_LAYOUT}")
    whole = split in ("", ALL_SPLIT)  # ROOT/<class>/<image>: one set of images, asked for as --split all
    folder = root if whole else root / split
    if not folder.is_dir():  # never the root in a split's place: train and test would hold the same images
        found = sorted(p.name for p in root.iterdir() if p.is_dir())[:6]
        raise DataError(
            f"no {split}/ folder in {root} (it holds: {', '.join(found) or 'no folders'}); "
            f"expected layout: {IMAGEFOLDER_LAYOUT}"
        )
    try:
        classes, class_to_idx = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise DataError(f"{folder}: {e}") from None
    paths = [Path(p) for p, _ in samples]
    return ImageSource(
        name="imagefolder",
        split=split,
        location=str(folder),
        ids=[p.relative_to(folder).as_posix() for p in paths],
        labels=np.array([c for _, c in samples], dtype=np.int64),
        classes=list(classes),
        loader=lambda i: open_image(paths[i]),
        paths=paths,
    )


class _HDF5Images:
    """Lazily opened per process (h5py handles do not survive fork)."""

    def __init__(self, path: Path):
        self.path, self.pid, self.file = path, None, None

    def __call__(self, i: int) -> Image.Image:
        import h5py

        if self.pid != os.getpid():
            self.file, self.pid = h5py.File(self.path, "r"), os.getpid()
        return Image.fromarray(np.asarray(self.file["images"][i]))

    def __getstate__(self):
        return {"path": self.path, "pid": None, "file": None}


def hdf5(root: Path | None, split: str) -> ImageSource:
    """An HDF5 file with `images` (N, H, W[, C]) uint8 and `labels` (N,); optional `ids` and a
    `classes` attribute. --data-root is the file, or a folder holding <split>.h5."""
    import h5py

    if root is None:
        raise DataError(f"--data hdf5 needs --data-root; expected layout: {HDF5_LAYOUT}")
    path = Path(root)
    if path.is_dir():
        path = path / f"{split}.h5"
    if not path.is_file():
        raise DataError(f"HDF5 file not found: {path}; expected layout: {HDF5_LAYOUT}")
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f or "labels" not in f:
                raise DataError(f"{path}: needs datasets 'images' and 'labels', found {sorted(f.keys())}")
            images, labels_ds = f["images"], f["labels"]
            if images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise DataError(
                    f"{path}: 'images' must be uint8 N x H x W [x C], got {images.dtype} {images.shape}"
                )
            if images.ndim == 4 and images.shape[3] not in (1, 3, 4):
                raise DataError(f"{path}: 'images' has {images.shape[3]} channels; expected 1, 3 or 4")
            # a declared shape is checked before anything is read, so a huge one allocates nothing
            if images.shape[0] > MAX_HDF5_IMAGES or int(np.prod(images.shape[1:])) > MAX_IMAGE_VALUES:
                raise DataError(
                    f"{path}: 'images' declares an implausible shape {images.shape} "
                    f"(at most {MAX_HDF5_IMAGES} images of {MAX_IMAGE_VALUES} values)"
                )
            if labels_ds.shape != (images.shape[0],) or not np.issubdtype(labels_ds.dtype, np.integer):
                raise DataError(
                    f"{path}: 'labels' must be {images.shape[0]} integers, "
                    f"got {labels_ds.dtype} {labels_ds.shape}"
                )
            labels = np.asarray(labels_ds[:])
            n = images.shape[0]
            ids = (
                [x.decode() if isinstance(x, bytes) else str(x) for x in f["ids"][:]]
                if "ids" in f
                else [str(i) for i in range(n)]
            )
            classes = [str(c) for c in f.attrs.get("classes", [])] or [
                str(c) for c in range(int(labels.max()) + 1 if n else 0)
            ]
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    return ImageSource("hdf5", split, str(path), ids, labels.astype(np.int64), classes, _HDF5Images(path))


def fashion_mnist_dir() -> Path:
    candidates = [Path(os.environ[FASHION_MNIST_ENV])] if os.environ.get(FASHION_MNIST_ENV) else []
    candidates.append(FASHION_MNIST_SYSTEM_DIR)
    for d in candidates:
        if (d / "t10k-labels-idx1-ubyte.gz").is_file():
            return d
    raise DataError(
        f"Fashion-MNIST not found in {' or '.join(map(str, candidates))}: "
        f"install it with `apt-get install dataset-fashion-mnist` or set ${FASHION_MNIST_ENV}"
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """A gzipped IDX file (big-endian header: magic, dims) as a uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip IDX file ({e})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise DataError(f"{path}: IDX magic number {found}, expected {magic}")
    dims = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: {len(raw) - header} data bytes, header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def fashion_mnist(root: Path | None, split: str) -> ImageSource:
    """Fashion-MNIST's IDX files: --data-root, else $FASHION_MNIST_DIR, else the Debian package's."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"fashion-mnist has splits 'train' and 'test', not {split!r}")
    folder = Path(root) if root is not None else fashion_mnist_dir()
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051)
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return ImageSource(
        "fashion-mnist",
        split,
        str(folder),
        [f"{split}/{i}" for i in range(len(images))],
        labels,
        list(FASHION_MNIST_CLASSES),
        lambda i: Image.fromarray(images[i]),
    )


def subset_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of 0..n-1, or `limit` of them drawn by a seeded permutation, in ascending order."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:limit])
