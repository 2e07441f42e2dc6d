"""Tiny trees in each dataset's official layout, written by the tests.

Every builder takes a folder, writes a few images and the annotation files the release ships,
and returns what a reader must find: {split: [(id, class identifier), ...]} and the classes in
label order. Each image is one flat colour whose red channel encodes its class, so a test can
tell which file was loaded; its blue channel differs from image to image (up to 70 images), so
no two files hold the same pixels and the splits share no image, as in the releases.
"""

from __future__ import annotations

import csv
import itertools
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

_IMAGES = itertools.count()


def colour(label: int, k: int = 0) -> tuple[int, int, int]:
    return (30 + 40 * label, 20 + 10 * k, 90)


def unique_colour(label: int, k: int = 0) -> tuple[int, int, int]:
    """colour(label, k) with a blue channel of its own (steps of 3 survive JPEG)."""
    r, g, _ = colour(label, k)
    return (r, g, 40 + 3 * (next(_IMAGES) % 70))


def write_image(path: Path, label: int, k: int = 0, size=(48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, unique_colour(label, k)).save(path, quality=95)


def write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# ---------------------------------------------------------------- ImageNet
WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: the standard order
WORDS = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark"]
DEVKIT_IDS = {"n01484850": 1, "n01440764": 2, "n01443537": 3}  # the devkit numbers synsets otherwise


def imagenet(root: Path, val: str = "folders") -> dict:
    """train/<wnid>/<wnid>_<k>.JPEG (3 a class); val as synset folders, or flat with
    LOC_val_solution.csv ('csv'), the devkit folder ('devkit') or the devkit .tar.gz ('devkit-tar')."""
    expect = {"train": [], "val": []}
    for c, w in enumerate(WNIDS):
        for k in range(3):
            name = f"{w}/{w}_{k}.JPEG"
            write_image(root / "train" / name, c, k)
            expect["train"].append((name, w))
    val_labels = [2, 0, 1, 0, 2]
    for n, c in enumerate(val_labels, 1):
        stem = f"ILSVRC2012_val_{n:08d}"
        if val == "folders":
            write_image(root / "val" / WNIDS[c] / f"{stem}.JPEG", c, n)
            expect["val"].append((f"{WNIDS[c]}/{stem}.JPEG", WNIDS[c]))
        else:
            write_image(root / "val" / f"{stem}.JPEG", c, n)
            expect["val"].append((f"{stem}.JPEG", WNIDS[c]))
    expect["val"].sort()
    if val == "csv":
        with open(root / "LOC_val_solution.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageId", "PredictionString"])
            for n, c in enumerate(val_labels, 1):
                w.writerow([f"ILSVRC2012_val_{n:08d}", f"{WNIDS[c]} 1 2 30 40 {WNIDS[c]} 5 6 7 8"])
        write_lines(root / "LOC_synset_mapping.txt", [f"{w} {words}" for w, words in zip(WNIDS, WORDS)])
    if val.startswith("devkit"):
        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
        synsets = [(DEVKIT_IDS[w], w, words, "", 0) for w, words in zip(WNIDS, WORDS)]
        synsets.append((1001, "n00001740", "entity", "", 3))  # an inner node: not a class
        savemat(data / "meta.mat", {"synsets": np.array(synsets, dtype=dt)})
        write_lines(
            data / "ILSVRC2012_validation_ground_truth.txt", [DEVKIT_IDS[WNIDS[c]] for c in val_labels]
        )
        if val == "devkit-tar":
            with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
                tar.add(root / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
            for p in sorted(data.iterdir()):
                p.unlink()
            data.rmdir()
            (root / "ILSVRC2012_devkit_t12").rmdir()
    return {"splits": expect, "classes": WNIDS}


# ---------------------------------------------------------------- FGVC
def aircraft(root: Path) -> dict:
    """fgvc-aircraft-2013b/data: 3 variants in 2 families of 2 manufacturers; images 60 px tall
    with a white 20 px banner at the bottom."""
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "A310"]
    family = {"707-320": "Boeing 707", "A300B4": "A300", "A310": "A310"}
    maker = {"707-320": "Boeing", "A300B4": "Airbus", "A310": "Airbus"}
    write_lines(data / "variants.txt", variants)
    write_lines(data / "families.txt", ["A300", "A310", "Boeing 707"])
    write_lines(data / "manufacturers.txt", ["Airbus", "Boeing"])
    splits = {"train": [0, 1, 2], "val": [2, 1, 0], "test": [0, 0, 1, 2]}
    splits["trainval"] = splits["train"] + splits["val"]
    ids = {
        "train": ["1000001", "1000002", "1000003"],
        "val": ["1000004", "1000005", "1000006"],
        "test": ["1000007", "1000008", "1000009", "1000010"],
    }
    ids["trainval"] = ids["train"] + ids["val"]
    for split in ("train", "val", "test"):
        for i, c in zip(ids[split], splits[split]):
            img = Image.new("RGB", (64, 60), unique_colour(c))
            img.paste((255, 255, 255), (0, 40, 64, 60))
            (data / "images").mkdir(parents=True, exist_ok=True)
            img.save(data / "images" / f"{i}.jpg", quality=95)
    expect = {}
    for split in splits:
        v = [variants[c] for c in splits[split]]
        write_lines(data / f"images_variant_{split}.txt", [f"{i} {x}" for i, x in zip(ids[split], v)])
        write_lines(data / f"images_family_{split}.txt", [f"{i} {family[x]}" for i, x in zip(ids[split], v)])
        write_lines(
            data / f"images_manufacturer_{split}.txt", [f"{i} {maker[x]}" for i, x in zip(ids[split], v)]
        )
        expect[split] = [(f"{i}.jpg", x) for i, x in zip(ids[split], v)]
    return {
        "splits": expect,
        "classes": variants,
        "family": {split: [(i, family[x]) for i, x in e] for split, e in expect.items()},
    }


def cars(root: Path) -> dict:
    base = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(names, dtype=object)})
    dt = [
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("fname", "O"),
    ]
    expect = {}
    for split, labels, mat in (
        ("train", [1, 2, 3, 2], base / "devkit" / "cars_train_annos.mat"),
        ("test", [3, 1], base / "cars_test_annos_withlabels.mat"),
    ):
        rows = []
        for k, c in enumerate(labels, 1):
            fname = f"{k:05d}.jpg"
            write_image(base / f"cars_{split}" / fname, c - 1, k)
            rows.append((1, 1, 30, 30, c, fname))
        savemat(mat, {"annotations": np.array(rows, dtype=dt)})
        expect[split] = [(f"{k:05d}.jpg", names[c - 1]) for k, c in enumerate(labels, 1)]
    return {"splits": expect, "classes": names}


def _cub_like(base: Path, class_ids: list[int], names: list[str], images: list[tuple[int, int]]) -> dict:
    """images: (class id, is_train); writes images/<class folder>/<n>.jpg and the text files."""
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    expect = {"train": [], "test": []}
    order = sorted(class_ids)
    for n, (cid, is_train) in enumerate(images, 1):
        folder = f"{cid:03d}.{names[class_ids.index(cid)].replace(' ', '_')}"
        rel = f"{folder}/img_{n}.jpg"
        write_image(base / "images" / rel, order.index(cid), n, size=(60, 50))
        lines["images"].append(f"{n} {rel}")
        lines["labels"].append(f"{n} {cid}")
        lines["split"].append(f"{n} {is_train}")
        lines["boxes"].append(f"{n} 10.0 5.0 30.0 20.0")
        expect["train" if is_train else "test"].append((rel, str(cid)))
    write_lines(base / "images.txt", lines["images"])
    write_lines(base / "image_class_labels.txt", lines["labels"])
    write_lines(base / "train_test_split.txt", lines["split"])
    write_lines(base / "bounding_boxes.txt", lines["boxes"])
    return expect


def cub(root: Path) -> dict:
    base = root / "CUB_200_2011"
    names = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    write_lines(base / "classes.txt", [f"{k} {k:03d}.{n.replace(' ', '_')}" for k, n in enumerate(names, 1)])
    expect = _cub_like(base, [1, 2, 3], names, [(1, 1), (2, 1), (3, 1), (1, 0), (3, 0), (2, 1)])
    return {"splits": expect, "classes": ["1", "2", "3"]}


def nabirds(root: Path) -> dict:
    """Sparse class ids: 295, 313, 1000 label images; 0 and 22 are inner nodes of the hierarchy."""
    base = root / "nabirds"
    all_classes = {0: "Birds", 22: "Ducks", 295: "Mallard", 313: "Wood Duck", 1000: "Common Loon"}
    write_lines(base / "classes.txt", [f"{k} {v}" for k, v in all_classes.items()])
    write_lines(base / "hierarchy.txt", ["22 0", "295 22", "313 22", "1000 0"])
    uuid = lambda n: f"{n:08x}-aaaa-bbbb-cccc-{n:012x}"  # noqa: E731 - NABirds ids are uuids
    images = [(313, 1), (1000, 1), (295, 0), (295, 1), (1000, 0)]
    lines = {"images": [], "labels": [], "split": []}
    expect = {"train": [], "test": []}
    order = [295, 313, 1000]
    for n, (cid, is_train) in enumerate(images, 1):
        rel = f"{cid:04d}/{uuid(n).replace('-', '')}.jpg"
        write_image(base / "images" / rel, order.index(cid), n)
        lines["images"].append(f"{uuid(n)} {rel}")
        lines["labels"].append(f"{uuid(n)} {cid}")
        lines["split"].append(f"{uuid(n)} {is_train}")
        expect["train" if is_train else "test"].append((rel, str(cid)))
    write_lines(base / "images.txt", lines["images"])
    write_lines(base / "image_class_labels.txt", lines["labels"])
    write_lines(base / "train_test_split.txt", lines["split"])
    return {"splits": expect, "classes": [str(c) for c in order]}


def dogs(root: Path) -> dict:
    folders = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
    expect = {}
    for split, labels in (("train", [1, 2, 3, 1]), ("test", [2, 3])):
        files = []
        for k, c in enumerate(labels):
            rel = f"{folders[c - 1]}/{folders[c - 1].split('-')[0]}_{split}{k}.jpg"
            write_image(root / "Images" / rel, c - 1, k)
            files.append(rel)
        savemat(
            root / f"{split}_list.mat",
            {"file_list": np.array(files, dtype=object), "labels": np.array(labels).reshape(-1, 1)},
        )
        expect[split] = [(f, f.split("/")[0]) for f in files]
    return {"splits": expect, "classes": folders}


def flowers(root: Path) -> dict:
    base = root / "flowers-102"
    labels = [1, 3, 2, 1, 3, 2, 2]  # 1-based, one per image_0000k.jpg
    for k, c in enumerate(labels, 1):
        write_image(base / "jpg" / f"image_{k:05d}.jpg", c - 1, k)
    savemat(base / "imagelabels.mat", {"labels": np.array(labels).reshape(1, -1)})
    split_ids = {"train": [1, 3], "val": [2, 6], "test": [4, 5, 7]}
    savemat(
        base / "setid.mat",
        {
            "trnid": np.array([split_ids["train"]]),
            "valid": np.array([split_ids["val"]]),
            "tstid": np.array([split_ids["test"]]),
        },
    )
    from torchvision.datasets import Flowers102

    split_ids["trainval"] = split_ids["train"] + split_ids["val"]
    expect = {
        s: [(f"image_{k:05d}.jpg", Flowers102.classes[labels[k - 1] - 1]) for k in ids]
        for s, ids in split_ids.items()
    }
    return {"splits": expect, "classes": list(Flowers102.classes)}


def pets(root: Path) -> dict:
    base = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]  # class ids 1..3 in the release's order
    expect = {}
    for split, items in (("trainval", [(1, 1), (2, 1), (3, 1)]), ("test", [(1, 2), (3, 2), (3, 3)])):
        lines = []
        for c, n in items:
            name = f"{breeds[c - 1]}_{n}"
            write_image(base / "images" / f"{name}.jpg", c - 1, n)
            lines.append(f"{name} {c} {1 if breeds[c - 1][0].isupper() else 2} 1")
        write_lines(base / "annotations" / f"{split}.txt", lines)
        expect[split] = [
            (f"{breeds[c - 1]}_{n}.jpg", ["Abyssinian", "American Bulldog", "Bengal"][c - 1])
            for c, n in items
        ]
    return {"splits": expect, "classes": ["Abyssinian", "American Bulldog", "Bengal"]}


def dtd(root: Path) -> dict:
    base = root / "dtd"
    classes = ["banded", "blotchy", "braided"]
    for c, name in enumerate(classes):
        for k in range(4):
            write_image(base / "images" / name / f"{name}_{k:04d}.jpg", c, k)
    expect = {}
    for p in (1, 2):
        for split, ks in (("train", [0, 1]), ("val", [2]), ("test", [3])):
            ks = [(k + p - 1) % 4 for k in ks]
            rel = [f"{name}/{name}_{k:04d}.jpg" for name in classes for k in ks]
            write_lines(base / "labels" / f"{split}{p}.txt", rel)
            if p == 1:
                expect[split] = [(r, r.split("/")[0]) for r in rel]
    return {"splits": expect, "classes": classes}


BUILDERS = {
    "imagenet": imagenet,
    "aircraft": aircraft,
    "cars": cars,
    "cub": cub,
    "dogs": dogs,
    "flowers": flowers,
    "nabirds": nabirds,
    "pets": pets,
    "dtd": dtd,
}


# python -m tests.extract.fake_datasets ROOT [NAME ...]: tiny trees for smoke runs of the Makefile
if __name__ == "__main__":
    import sys

    target, names = Path(sys.argv[1]), sys.argv[2:] or list(BUILDERS)
    for name in names:
        BUILDERS[name](target)
        print(f"wrote a tiny {name} tree under {target}")
