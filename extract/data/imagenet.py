"""ILSVRC2012 (ImageNet-1k) as distributed, read in place.

train/ holds one folder per synset. val/ is either the same (as many users rearrange it) or
flat (ILSVRC2012_val_<8 digits>.JPEG), labelled by Kaggle's LOC_val_solution.csv or by the
devkit (ILSVRC2012_devkit_t12/, or its .tar.gz read without extracting): meta.mat maps the
devkit's ILSVRC2012_ID to synsets, data/ILSVRC2012_validation_ground_truth.txt gives one ID per
val image in file-number order. Classes are the 1000 synsets in sorted order (the order of
torchvision's ImageFolder and guided-diffusion's class labels). Kaggle's tree
(ILSVRC/Data/CLS-LOC/{train,val} with LOC_* files beside ILSVRC/) works too.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from extract.data.find_root import read_table
from extract.data.sources import DataError, ImageSource, open_image

LAYOUT = (
    "ROOT/{train/<synset>/<image>.JPEG, val/<synset>/<image>.JPEG or val/ILSVRC2012_val_<n>.JPEG with "
    "LOC_val_solution.csv or ILSVRC2012_devkit_t12[.tar.gz]; "
    "optional LOC_synset_mapping.txt for class names} "
    "(or Kaggle's ROOT/ILSVRC/Data/CLS-LOC/{train,val} with the LOC_* files in ROOT)"
)
DEVKIT = "ILSVRC2012_devkit_t12"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def _folders(root: Path) -> tuple[Path, Path]:
    """(folder holding train/ and val/, folder holding the LOC_* files and the devkit)."""
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    return (kaggle, root) if kaggle.is_dir() else (root, root)


def _devkit_file(meta_dir: Path, member: str) -> bytes | None:
    """A devkit file (e.g. data/meta.mat) from the extracted folder or the .tar.gz, else None."""
    extracted = meta_dir / DEVKIT / member
    if extracted.is_file():
        return extracted.read_bytes()
    archive = meta_dir / f"{DEVKIT}.tar.gz"
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:gz") as tar:
                f = tar.extractfile(f"{DEVKIT}/{member}")
                return f.read() if f is not None else None
        except (KeyError, tarfile.TarError, OSError):
            return None
    return None


def devkit_synsets(meta_dir: Path) -> dict[int, tuple[str, str]] | None:
    """ILSVRC2012_ID -> (synset, words) for the 1000 leaf synsets of the devkit's meta.mat."""
    raw = _devkit_file(meta_dir, "data/meta.mat")
    if raw is None:
        return None
    from scipy.io import loadmat

    try:
        synsets = np.atleast_1d(loadmat(io.BytesIO(raw), squeeze_me=True)["synsets"])
        return {
            int(s["ILSVRC2012_ID"]): (str(s["WNID"]), str(s["words"]))
            for s in synsets
            if int(s["num_children"]) == 0
        }
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise DataError(f"imagenet: the devkit's data/meta.mat in {meta_dir} is not readable ({e})") from None


def class_list(data_dir: Path, meta_dir: Path) -> tuple[list[str], list[str]]:
    """(synsets in sorted order, their readable names): from LOC_synset_mapping.txt, else the
    devkit, else the synset folders of train/ (or val/), where names are the synsets."""
    mapping = meta_dir / "LOC_synset_mapping.txt"
    if mapping.is_file():
        pairs = dict(read_table("imagenet", mapping, 2))
    elif (synsets := devkit_synsets(meta_dir)) is not None:
        pairs = dict(synsets.values())
    else:
        pairs = {}
        for split in ("train", "val"):
            folder = data_dir / split
            if folder.is_dir():
                pairs = {d.name: d.name for d in os.scandir(folder) if d.is_dir()}
                if pairs:
                    break
    if not pairs:
        raise DataError(
            f"imagenet: no classes under {data_dir}: need train/<synset>/ folders, "
            f"LOC_synset_mapping.txt or the devkit; expected layout: {LAYOUT}"
        )
    wnids = sorted(pairs)
    return wnids, [pairs[w] for w in wnids]


def _images_in(folder: Path) -> list[str]:
    return sorted(
        e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _val_labels(meta_dir: Path) -> dict[str, str]:
    """Flat val/: image stem -> synset, from LOC_val_solution.csv or the devkit's ground truth."""
    solution = meta_dir / "LOC_val_solution.csv"
    if solution.is_file():
        with open(solution, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or []):
                raise DataError(
                    f"imagenet: {solution} needs the columns ImageId,PredictionString; "
                    f"found {reader.fieldnames}"
                )
            return {
                row["ImageId"]: row["PredictionString"].split()[0]
                for row in reader
                if (row["PredictionString"] or "").strip()
            }
    truth = _devkit_file(meta_dir, "data/ILSVRC2012_validation_ground_truth.txt")
    synsets = devkit_synsets(meta_dir)
    if truth is None or synsets is None:
        raise DataError(
            f"imagenet: val/ in {meta_dir} is flat but neither LOC_val_solution.csv nor the devkit "
            f"({DEVKIT}/ or {DEVKIT}.tar.gz) is beside it; expected layout: {LAYOUT}"
        )
    try:
        ids = [int(x) for x in truth.decode().split()]
    except ValueError:
        raise DataError(
            f"imagenet: the devkit's ILSVRC2012_validation_ground_truth.txt in {meta_dir} "
            "holds a line that is not an ILSVRC2012_ID"
        ) from None
    try:
        return {f"ILSVRC2012_val_{n:08d}": synsets[k][0] for n, k in enumerate(ids, 1)}
    except KeyError as e:
        raise DataError(
            f"imagenet: the devkit's ground truth uses ILSVRC2012_ID {e}, not a leaf synset of meta.mat"
        ) from None


def imagenet(root: Path | None, split: str, opts: dict) -> ImageSource:
    """ILSVRC2012 train or val in one of its distributed layouts (see the module doc)."""
    if root is None:
        raise DataError(f"--data imagenet needs --data-root; expected layout: {LAYOUT}")
    if not Path(root).is_dir():
        raise DataError(f"imagenet: --data-root {root} is not a folder; expected layout: {LAYOUT}")
    data_dir, meta_dir = _folders(Path(root))
    folder = data_dir / split
    if not folder.is_dir():
        raise DataError(f"imagenet: missing {folder}; expected layout: {LAYOUT}")
    wnids, names = class_list(data_dir, meta_dir)
    index = {w: k for k, w in enumerate(wnids)}
    subdirs = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    rel, labels = [], []
    if subdirs:
        unknown = [d for d in subdirs if d not in index]
        if unknown:
            raise DataError(
                f"imagenet: {folder / unknown[0]} is not one of the {len(wnids)} synsets "
                f"({len(unknown)} such folders)"
            )
        for d in subdirs:
            files = _images_in(folder / d)
            rel += [f"{d}/{f}" for f in files]
            labels += [index[d]] * len(files)
    else:
        truth = _val_labels(meta_dir)
        for f in _images_in(folder):
            stem = f.rsplit(".", 1)[0]
            if stem not in truth:
                raise DataError(
                    f"imagenet: {folder / f} has no ground-truth label "
                    "(looked in LOC_val_solution.csv / the devkit)"
                )
            if truth[stem] not in index:
                raise DataError(
                    f"imagenet: {folder / f} is labelled {truth[stem]}, not one of the {len(wnids)} synsets"
                )
            rel.append(f)
            labels.append(index[truth[stem]])
    paths = [folder / r for r in rel]
    return ImageSource(
        "imagenet",
        split,
        str(folder),
        rel,
        np.asarray(labels, dtype=np.int64),
        wnids,
        lambda i: open_image(paths[i]),
        paths=paths,
        class_names=names,
    )
