"""The fine-grained (FGVC) sets of the paper, read from their official layouts on disk.

Aircraft, Cars and Pets go through torchvision's dataset classes (download off), which read
the official annotation files; the others have no torchvision class that reads their layout
as distributed, so they are read here: CUB, Dogs and NABirds have none; torchvision's
Flowers102 refuses annotation files whose md5 differs from the release (check-data reports
that instead), and its DTD expects an extra `dtd/` level the official archive lacks.
Every reader is (root, split, options) -> ImageSource; labels start at 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from extract.data.find_root import dataset_folder, read_table, require
from extract.data.sources import DataError, ImageSource, open_image

AIRCRAFT_BANNER_PX = 20  # FGVC-Aircraft: the bottom 20 rows of every image are a copyright banner
AIRCRAFT_LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}

LAYOUTS = {
    "aircraft": "ROOT/fgvc-aircraft-2013b/data/{images/<id>.jpg, variants.txt, families.txt, "
    "manufacturers.txt, images_<level>_<split>.txt}",
    "cars": "ROOT/stanford_cars/{cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
    "cars_test_annos_withlabels.mat}",
    "cub": "ROOT/CUB_200_2011/{images/<class>/<file>.jpg, images.txt, image_class_labels.txt, "
    "train_test_split.txt, classes.txt, bounding_boxes.txt}",
    "dogs": "ROOT/{Images/<synset>-<breed>/<file>.jpg, train_list.mat, test_list.mat} "
    "(images.tar and lists.tar extracted)",
    "flowers": "ROOT/flowers-102/{jpg/image_<5 digits>.jpg, imagelabels.mat, setid.mat}",
    "nabirds": "ROOT/nabirds/{images/<class>/<file>.jpg, images.txt, image_class_labels.txt, "
    "train_test_split.txt, classes.txt}",
    "pets": "ROOT/oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/trainval.txt, annotations/test.txt}",
    "dtd": "ROOT/dtd/{images/<class>/<file>.jpg, labels/{train,val,test}<1..10>.txt}",
}


def _loadmat(dataset: str, path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{dataset}: {path} is not a readable MATLAB file ({e})") from None


def _mat_str(x) -> str:
    """A MATLAB string as loadmat gives it: str, or a cell (object array) wrapping one."""
    while isinstance(x, np.ndarray):
        x = x.reshape(-1)[0]
    return str(x)


def _files_source(
    name: str,
    split: str,
    folder: Path,
    paths: list[Path],
    labels,
    classes: list[str],
    class_names=None,
    loader=None,
) -> ImageSource:
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{name}: labels in {folder} run outside the {len(classes)} classes")
    ids = [p.relative_to(folder).as_posix() if p.is_relative_to(folder) else p.as_posix() for p in paths]
    load = loader or (lambda i: open_image(paths[i]))
    return ImageSource(
        name, split, str(folder), ids, labels, list(classes), load, paths=list(paths), class_names=class_names
    )


# ---------------------------------------------------------------- through torchvision
def aircraft(root: Path | None, split: str, opts: dict) -> ImageSource:
    """FGVC-Aircraft 2013b at --level variant (100), family (70) or manufacturer (30 in the 2013b
    files); the copyright banner at the bottom is cropped, as the dataset's authors ask."""
    from torchvision.datasets import FGVCAircraft

    level = opts["level"]
    folder = dataset_folder(
        "aircraft", root, ("fgvc-aircraft-2013b",), "data/images", LAYOUTS["aircraft"], exact=True
    )
    require(
        "aircraft",
        folder,
        [f"data/{AIRCRAFT_LEVELS[level]}", f"data/images_{level}_{split}.txt"],
        LAYOUTS["aircraft"],
    )
    try:
        ds = FGVCAircraft(folder.parent, split=split, annotation_level=level, download=False)
    except KeyError as e:
        raise DataError(
            f"aircraft: images_{level}_{split}.txt names class {e} absent from {AIRCRAFT_LEVELS[level]}"
        ) from None
    except ValueError:
        raise DataError(
            f"aircraft: {folder / 'data' / f'images_{level}_{split}.txt'} has a line without '<id> <class>'"
        ) from None
    paths = [Path(p) for p in ds._image_files]

    def load(i: int) -> Image.Image:
        img = open_image(paths[i])
        return img.crop((0, 0, img.size[0], max(1, img.size[1] - AIRCRAFT_BANNER_PX)))

    name = "aircraft" if level == "variant" else f"aircraft[level={level}]"
    return _files_source(name, split, folder / "data" / "images", paths, ds._labels, ds.classes, loader=load)


def cars(root: Path | None, split: str, opts: dict) -> ImageSource:
    """Stanford Cars (196 classes) with the devkit's annotations."""
    from torchvision.datasets import StanfordCars

    folder = dataset_folder("cars", root, ("stanford_cars",), "devkit", LAYOUTS["cars"], exact=True)
    annos = "devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
    require("cars", folder, ["devkit/cars_meta.mat", annos, f"cars_{split}"], LAYOUTS["cars"])
    try:
        ds = StanfordCars(folder.parent, split=split, download=False)
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"cars: cannot read the annotations in {folder} ({e})") from None
    paths = [Path(p) for p, _ in ds._samples]
    return _files_source(
        "cars",
        split,
        folder / f"cars_{split}",
        paths,
        [c for _, c in ds._samples],
        [str(c) for c in ds.classes],
    )


def pets(root: Path | None, split: str, opts: dict) -> ImageSource:
    """Oxford-IIIT Pets (37 breeds), trainval/test; class names from both split files, so
    the two splits share one class list."""
    from torchvision.datasets import OxfordIIITPet

    folder = dataset_folder("pets", root, ("oxford-iiit-pet",), "annotations", LAYOUTS["pets"], exact=True)
    require("pets", folder, ["images", "annotations/trainval.txt", "annotations/test.txt"], LAYOUTS["pets"])
    names: dict[int, str] = {}
    chosen = None
    for s in ("trainval", "test"):
        try:
            ds = OxfordIIITPet(folder.parent, split=s, download=False)
        except (ValueError, IndexError) as e:
            raise DataError(f"pets: cannot parse {folder}/annotations/{s}.txt ({e})") from None
        for path, label in zip(ds._images, ds._labels):
            names.setdefault(label, " ".join(w.title() for w in Path(path).stem.rsplit("_", 1)[0].split("_")))
        if s == split:
            chosen = ds
    classes = [names.get(k, f"class {k + 1}") for k in range(max(names) + 1 if names else 0)]
    return _files_source(
        "pets", split, folder / "images", [Path(p) for p in chosen._images], chosen._labels, classes
    )


# ---------------------------------------------------------------- read here
def flowers(root: Path | None, split: str, opts: dict) -> ImageSource:
    """Oxford Flowers-102: setid.mat's trnid/valid/tstid (trainval: trnid then valid),
    imagelabels.mat (1-based)."""
    from torchvision.datasets import Flowers102

    folder = dataset_folder("flowers", root, ("flowers-102",), "setid.mat", LAYOUTS["flowers"])
    require("flowers", folder, ["jpg", "imagelabels.mat", "setid.mat"], LAYOUTS["flowers"])
    keys = {"train": ("trnid",), "val": ("valid",), "trainval": ("trnid", "valid"), "test": ("tstid",)}[split]
    setid = _loadmat("flowers", folder / "setid.mat")
    labels_all = np.atleast_1d(
        _loadmat("flowers", folder / "imagelabels.mat").get("labels", np.array([]))
    ).astype(np.int64)
    missing = [k for k in keys if k not in setid]
    if missing:
        raise DataError(f"flowers: {folder / 'setid.mat'} has no {missing[0]!r}")
    image_ids = [i for k in keys for i in np.atleast_1d(setid[k]).astype(np.int64).tolist()]
    bad = [i for i in image_ids if not 1 <= i <= len(labels_all)]
    if bad:
        raise DataError(
            f"flowers: setid.mat names image {bad[0]} but imagelabels.mat has {len(labels_all)} labels"
        )
    paths = [folder / "jpg" / f"image_{i:05d}.jpg" for i in image_ids]
    return _files_source(
        "flowers",
        split,
        folder / "jpg",
        paths,
        labels_all[np.array(image_ids, dtype=np.int64) - 1] - 1,
        list(Flowers102.classes),
    )


def dtd(root: Path | None, split: str, opts: dict) -> ImageSource:
    """Describable Textures (47 classes), partition 1..10 of the official train/val/test lists."""
    partition = int(opts["partition"])
    folder = dataset_folder("dtd", root, ("dtd", "dtd/dtd"), "labels", LAYOUTS["dtd"])
    listing = f"labels/{split}{partition}.txt"
    require("dtd", folder, ["images", listing], LAYOUTS["dtd"])
    classes = sorted(d.name for d in (folder / "images").iterdir() if d.is_dir())
    index = {c: k for k, c in enumerate(classes)}
    paths, labels = [], []
    for (rel,) in read_table("dtd", folder / listing, 1):
        cls = rel.split("/")[0]
        if cls not in index:
            raise DataError(
                f"dtd: {folder / listing} names {rel!r}, whose class folder is not in {folder / 'images'}"
            )
        paths.append(folder / "images" / rel)
        labels.append(index[cls])
    name = "dtd" if partition == 1 else f"dtd[partition={partition}]"
    return _files_source(name, split, folder / "images", paths, labels, classes)


def _cub_like(
    dataset: str, folder: Path, split: str
) -> tuple[list[str], list[Path], list[str], dict[str, str]]:
    """CUB and NABirds share a layout: images.txt (id path), image_class_labels.txt (id class),
    train_test_split.txt (id is_train), classes.txt (class name). Returns the split's image
    ids, paths, class ids, and every class id's name."""
    paths = dict(read_table(dataset, folder / "images.txt", 2))
    label_of = dict(read_table(dataset, folder / "image_class_labels.txt", 2))
    is_train = dict(read_table(dataset, folder / "train_test_split.txt", 2))
    names = dict(read_table(dataset, folder / "classes.txt", 2))
    want = "1" if split == "train" else "0"
    ids = [i for i in paths if is_train.get(i) == want]
    missing = [i for i in ids if i not in label_of]
    if missing:
        raise DataError(f"{dataset}: image {missing[0]} of images.txt has no line in image_class_labels.txt")
    bad = [c for c in [*label_of.values(), *names] if not c.isdigit()]
    if bad:
        raise DataError(
            f"{dataset}: class id {bad[0]!r} in {folder} is not a number "
            "(image_class_labels.txt, classes.txt)"
        )
    return ids, [folder / "images" / paths[i] for i in ids], [label_of[i] for i in ids], names


def cub(root: Path | None, split: str, opts: dict) -> ImageSource:
    """CUB-200-2011 (200 species), the official train/test split; --data-opt crop=bbox crops
    each image to its bounding box."""
    folder = dataset_folder("cub", root, ("CUB_200_2011",), "images.txt", LAYOUTS["cub"])
    files = ["images", "images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"]
    crop = opts["crop"] == "bbox"
    require("cub", folder, files + (["bounding_boxes.txt"] if crop else []), LAYOUTS["cub"])
    ids, paths, class_of, names = _cub_like("cub", folder, split)
    classes = sorted(names, key=int)
    index = {c: k for k, c in enumerate(classes)}
    unknown = [c for c in class_of if c not in index]
    if unknown:
        raise DataError(f"cub: image_class_labels.txt uses class {unknown[0]}, absent from classes.txt")
    loader = _box_loader(folder / "bounding_boxes.txt", ids, paths) if crop else None
    return _files_source(
        "cub" if not crop else "cub[crop=bbox]",
        split,
        folder / "images",
        paths,
        [index[c] for c in class_of],
        classes,
        class_names=[names[c] for c in classes],
        loader=loader,
    )


def _box_loader(path: Path, ids: list[str], paths: list[Path]):
    """image i -> the image cropped to its box in CUB's bounding_boxes.txt (id x y width height)."""
    boxes = {}
    for i, rest in read_table("cub", path, 2):
        try:
            x, y, w, h = (float(v) for v in rest.split())
        except ValueError:
            raise DataError(f"cub: {path}: image {i} needs 'x y width height', got {rest!r}") from None
        boxes[i] = (int(x), int(y), int(x + w), int(y + h))
    missing = [i for i in ids if i not in boxes]
    if missing:
        raise DataError(f"cub: image {missing[0]} has no line in {path}")
    chosen = [boxes[i] for i in ids]
    return lambda k: open_image(paths[k]).crop(chosen[k])


def nabirds(root: Path | None, split: str, opts: dict) -> ImageSource:
    """NABirds: the 555 leaf classes that label its images (class ids are sparse; they are
    numbered in ascending id order over both splits, so train and test share labels)."""
    folder = dataset_folder("nabirds", root, ("nabirds",), "images.txt", LAYOUTS["nabirds"])
    require(
        "nabirds",
        folder,
        ["images", "images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"],
        LAYOUTS["nabirds"],
    )
    ids, paths, class_of, names = _cub_like("nabirds", folder, split)
    leaves = sorted({c for _, c in read_table("nabirds", folder / "image_class_labels.txt", 2)}, key=int)
    index = {c: k for k, c in enumerate(leaves)}
    return _files_source(
        "nabirds",
        split,
        folder / "images",
        paths,
        [index[c] for c in class_of],
        leaves,
        class_names=[names.get(c, c) for c in leaves],
    )


def dogs(root: Path | None, split: str, opts: dict) -> ImageSource:
    """Stanford Dogs (120 breeds): train_list.mat / test_list.mat (file_list, 1-based labels);
    class ids are the Images/ folder names (<synset>-<breed>)."""
    folder = dataset_folder(
        "dogs", root, ("stanford_dogs", "StanfordDogs"), "train_list.mat", LAYOUTS["dogs"]
    )
    require("dogs", folder, ["Images", "train_list.mat", "test_list.mat"], LAYOUTS["dogs"])
    classes: dict[int, str] = {}
    chosen = None
    for s in ("train", "test"):
        mat = _loadmat("dogs", folder / f"{s}_list.mat")
        if "file_list" not in mat or "labels" not in mat:
            raise DataError(f"dogs: {folder / f'{s}_list.mat'} lacks file_list or labels")
        files = [_mat_str(f) for f in np.atleast_1d(mat["file_list"])]
        labels = np.atleast_1d(mat["labels"]).astype(np.int64) - 1
        if len(files) != len(labels):
            raise DataError(f"dogs: {s}_list.mat has {len(files)} files but {len(labels)} labels")
        for f, k in zip(files, labels.tolist()):
            classes.setdefault(k, f.split("/")[0])
        if s == split:
            chosen = (files, labels)
    files, labels = chosen
    ordered = [classes.get(k, f"class {k + 1}") for k in range(max(classes) + 1 if classes else 0)]
    names = [c.split("-", 1)[1].replace("_", " ") if "-" in c else c for c in ordered]
    return _files_source(
        "dogs",
        split,
        folder / "Images",
        [folder / "Images" / f for f in files],
        labels,
        ordered,
        class_names=names,
    )
