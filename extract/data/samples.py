"""Generated samples as a dataset: an `extract sample` folder, or a guided-diffusion `.npz`.

So samples go through the same readers, preprocessing and store writer as real images: a
store of sample features is made with `extract run --data samples --data-root FOLDER` (or
`pixels`, `backbone`), and compared with a real split's store by `analysis fd` or `cka`.

The ids carry the first 12 hex digits of the sample file's sha256, so two sample sets of the
same size never share a store key (the key holds the dataset's fingerprint, not its pixels).
Labels are the class labels a class-conditional run drew (`arr_1`), else 0 for every image.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from extract.data.sources import GRAY_MODES, DataError, ImageSource, open_image
from extract.store.files import file_sha256

LAYOUT = (
    "ROOT = a finished `extract sample` folder (samples.json, png/NNNNNN.png, samples_*.npz), "
    "a folder of PNGs of one size and kind, "
    "or a .npz file (arr_0 uint8 NHWC, arr_1 labels)"
)
SPLIT = "all"


def _labels(labels: np.ndarray | None, n: int) -> tuple[np.ndarray, list[str]]:
    if labels is None:
        return np.zeros(n, np.int64), ["sample"]
    classes = sorted({int(v) for v in labels})
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[int(v)] for v in labels], np.int64), [str(c) for c in classes]


class _NpzImages:
    """arr_0 of a .npz, read once per process on first use."""

    def __init__(self, path: Path):
        self.path, self.images = path, None

    def __call__(self, i: int) -> Image.Image:
        if self.images is None:
            with np.load(self.path) as f:
                self.images = f["arr_0"]
        img = self.images[i]
        return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _from_npz(path: Path, split: str) -> ImageSource:
    try:
        with np.load(path) as f:
            if "arr_0" not in f.files:
                raise DataError(
                    f"{path}: no arr_0 (expected guided-diffusion's sample file); layout: {LAYOUT}"
                )
            shape = f["arr_0"].shape
            labels = np.asarray(f["arr_1"]) if "arr_1" in f.files else None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz ({e}); layout: {LAYOUT}") from None
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise DataError(f"{path}: arr_0 has shape {shape}, expected (N, H, W, 1 or 3) uint8")
    tag = file_sha256(path)[:12]
    y, classes = _labels(labels, shape[0])
    return ImageSource(
        name="samples",
        split=split,
        location=str(path),
        ids=[f"{tag}/{i:06d}" for i in range(shape[0])],
        labels=y,
        classes=classes,
        loader=_NpzImages(path),
    )


def _from_folder(folder: Path, split: str) -> ImageSource:
    record = folder / "samples.json"
    try:
        made = json.loads(record.read_text())
    except (OSError, ValueError):
        raise DataError(f"{folder}: no readable samples.json; layout: {LAYOUT}") from None
    if not made.get("complete"):
        raise DataError(
            f"{folder}: the sampling run is not finished; run `extract sample` again with the same arguments"
        )
    npz = folder / made["provenance"]["samples"]
    n = int(made["provenance"]["n"])  # recorded: no need to decompress every image to count them
    try:
        with np.load(npz) as f:
            labels = np.asarray(f["arr_1"]) if "arr_1" in f.files else None
    except (OSError, ValueError) as e:
        raise DataError(
            f"{npz}: the run's sample file cannot be read ({e}); run `extract sample` again"
        ) from None
    paths = [folder / "png" / f"{i:06d}.png" for i in range(n)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{folder}: {len(missing)} PNGs missing, first {missing[0]}; run `extract sample` again"
        )
    tag = made["provenance"]["sha256"][:12]
    y, classes = _labels(labels, n)
    return ImageSource(
        name="samples",
        split=split,
        location=str(folder),
        ids=[f"{tag}/{i:06d}" for i in range(n)],
        labels=y,
        classes=classes,
        loader=lambda i: open_image(paths[i]),
        paths=paths,
    )


def _from_pngs(folder: Path, split: str) -> ImageSource:
    """A plain folder of PNGs, in name order; all of one size and one kind (grayscale or RGB).
    The ids carry a hash of the files' bytes, so other pixels under the same names are another set."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise DataError(f"{folder}: no PNG images and no samples.json; layout: {LAYOUT}")
    kinds: dict[tuple, list[Path]] = {}
    digest = hashlib.sha256()
    for f in files:  # headers only: size and mode come without decoding the pixels
        try:
            with Image.open(f) as img:
                w, h, mode = *img.size, img.mode
        except OSError as e:
            raise DataError(f"{f}: not a readable image ({e})") from None
        kinds.setdefault((w, h, "grayscale" if mode in GRAY_MODES else "RGB"), []).append(f)
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    if len(kinds) > 1:
        parts = [
            f"{w}x{h} {kind} ({len(fs)}, e.g. {fs[0].name})"
            for (w, h, kind), fs in sorted(kinds.items(), key=lambda kv: -len(kv[1]))
        ]
        raise DataError(
            f"{folder}: mixed images, {'; '.join(parts)}; a sample set must be of one size and one kind"
        )
    tag = digest.hexdigest()[:12]
    return ImageSource(
        name="samples",
        split=split,
        location=str(folder),
        ids=[f"{tag}/{f.name}" for f in files],
        labels=np.zeros(len(files), np.int64),
        classes=["sample"],
        loader=lambda i: open_image(files[i]),
        paths=files,
    )


def samples(root: Path | None, split: str) -> ImageSource:
    """The images of a samples folder or .npz, in sample order, as one split named 'all'."""
    if root is None:
        raise DataError(f"--data samples needs --data-root; layout: {LAYOUT}")
    root = Path(root)
    if root.is_file():
        return _from_npz(root, split)
    if root.is_dir():
        return _from_folder(root, split) if (root / "samples.json").exists() else _from_pngs(root, split)
    raise DataError(f"samples not found: {root}; layout: {LAYOUT}")
