"""The dataset registry: every `--data NAME`, its splits, options, official sizes and layout.

`open_dataset(name, root, split, options)` is the one way the extract stage (and `train`,
`pixels`, `backbone`, `check-data`) gets an ImageSource. `python -m extract datasets` prints
this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from extract.data import cifar, digits, fgvc, hf_datasets, imagenet, samples, tar_shards
from extract.data import sources as data
from extract.data.sources import DataError, ImageSource

Reader = Callable[[Path | None, str, dict], ImageSource]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset. `options` maps an option to its allowed values, the first being the
    default; `free_options` maps an option that takes any value (a column, a field) to its default;
    `official` gives each split's image count in the release and `classes` the class count (per
    value of the option named by `classes_by`, if it varies)."""

    name: str
    read: Reader
    splits: tuple[str, ...]
    layout: str
    description: str
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    official: dict[str, int] = field(default_factory=dict)
    classes: int | dict[str, int] | None = None
    classes_by: str | None = None
    free_options: dict[str, str] = field(default_factory=dict)

    def check_split(self, split: str) -> None:
        if self.splits and split not in self.splits:
            raise DataError(f"{self.name} has splits {', '.join(self.splits)}, not {split!r}")

    def official_classes(self, options: dict) -> int | None:
        if isinstance(self.classes, dict):
            return self.classes[options[self.classes_by]]
        return self.classes


def _generic(reader: Callable[[Path | None, str], ImageSource]) -> Reader:
    return lambda root, split, opts: reader(root, split)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "fashion-mnist",
            _generic(data.fashion_mnist),
            ("train", "test"),
            data.FASHION_MNIST_LAYOUT,
            "Fashion-MNIST (the demo's data)",
            official={"train": 60000, "test": 10000},
            classes=10,
        ),
        DatasetSpec(
            "digits",
            _generic(digits.digits),
            digits.SPLITS,
            digits.LAYOUT,
            "scikit-learn's 8x8 digits upsampled to 32x32, a fixed seeded 80/20 split per class",
            official=dict(digits.OFFICIAL),
            classes=10,
        ),
        DatasetSpec(
            "imagefolder",
            _generic(data.imagefolder),
            (),
            data.IMAGEFOLDER_LAYOUT,
            "any folder of class folders; classes sorted by name",
        ),
        DatasetSpec("hdf5", _generic(data.hdf5), (), data.HDF5_LAYOUT, "images and labels in one HDF5 file"),
        DatasetSpec(
            "samples",
            _generic(samples.samples),
            (samples.SPLIT,),
            samples.LAYOUT,
            "generated images: an `extract sample` folder or a guided-diffusion .npz "
            "(label: the class drawn, else 0)",
        ),
        DatasetSpec(
            "imagenet",
            imagenet.imagenet,
            ("train", "val"),
            imagenet.LAYOUT,
            "ILSVRC2012 (ImageNet-1k), 1000 synsets in sorted order",
            official={"train": 1281167, "val": 50000},
            classes=1000,
        ),
        DatasetSpec(
            "aircraft",
            fgvc.aircraft,
            ("train", "val", "trainval", "test"),
            fgvc.LAYOUTS["aircraft"],
            "FGVC-Aircraft 2013b, banner cropped",
            options={"level": tuple(fgvc.AIRCRAFT_LEVELS)},
            official={"train": 3334, "val": 3333, "trainval": 6667, "test": 3333},
            classes={"variant": 100, "family": 70, "manufacturer": 30},
            classes_by="level",
        ),
        DatasetSpec(
            "cars",
            fgvc.cars,
            ("train", "test"),
            fgvc.LAYOUTS["cars"],
            "Stanford Cars",
            official={"train": 8144, "test": 8041},
            classes=196,
        ),
        DatasetSpec(
            "cub",
            fgvc.cub,
            ("train", "test"),
            fgvc.LAYOUTS["cub"],
            "CUB-200-2011 birds; crop=bbox crops to the box",
            options={"crop": ("none", "bbox")},
            official={"train": 5994, "test": 5794},
            classes=200,
        ),
        DatasetSpec(
            "dogs",
            fgvc.dogs,
            ("train", "test"),
            fgvc.LAYOUTS["dogs"],
            "Stanford Dogs",
            official={"train": 12000, "test": 8580},
            classes=120,
        ),
        DatasetSpec(
            "flowers",
            fgvc.flowers,
            ("train", "val", "trainval", "test"),
            fgvc.LAYOUTS["flowers"],
            "Oxford Flowers-102",
            official={"train": 1020, "val": 1020, "trainval": 2040, "test": 6149},
            classes=102,
        ),
        DatasetSpec(
            "nabirds",
            fgvc.nabirds,
            ("train", "test"),
            fgvc.LAYOUTS["nabirds"],
            "NABirds, the 555 leaf classes",
            official={"train": 23929, "test": 24633},
            classes=555,
        ),
        DatasetSpec(
            "pets",
            fgvc.pets,
            ("trainval", "test"),
            fgvc.LAYOUTS["pets"],
            "Oxford-IIIT Pets, 37 breeds",
            official={"trainval": 3680, "test": 3669},
            classes=37,
        ),
        DatasetSpec(
            "dtd",
            fgvc.dtd,
            ("train", "val", "test"),
            fgvc.LAYOUTS["dtd"],
            "Describable Textures, partition 1-10",
            options={"partition": tuple(str(k) for k in range(1, 11))},
            official={"train": 1880, "val": 1880, "test": 1880},
            classes=47,
        ),
        DatasetSpec(
            "cifar10",
            cifar.cifar10,
            ("train", "test"),
            cifar.LAYOUTS["cifar10"],
            "CIFAR-10, the official python batches (read without unrestricted unpickling)",
            official={"train": 50000, "test": 10000},
            classes=10,
        ),
        DatasetSpec(
            "cifar100",
            cifar.cifar100,
            ("train", "test"),
            cifar.LAYOUTS["cifar100"],
            "CIFAR-100, the official python batches; labels=coarse: the 20 superclasses",
            options={"labels": cifar.CIFAR100_LEVELS},
            official={"train": 50000, "test": 10000},
            classes={"fine": 100, "coarse": 20},
            classes_by="labels",
        ),
        DatasetSpec(
            "webdataset",
            tar_shards.webdataset,
            (),
            tar_shards.LAYOUT,
            "WebDataset tar shards (img2dataset's output), read by position; needs diffprobe[webdataset]",
            free_options={tar_shards.LABEL_OPTION: tar_shards.DEFAULT_LABEL},
        ),
        DatasetSpec(
            "hf",
            hf_datasets.hf,
            (),
            hf_datasets.LAYOUT,
            "a Hugging Face dataset saved with save_to_disk, or its parquet files; needs diffprobe[hf]",
            free_options=dict(hf_datasets.FREE_OPTIONS),
        ),
    ]
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def parse_options(spec: DatasetSpec, pairs: tuple[str, ...] | list[str] | dict) -> dict[str, str]:
    """`key=value` strings (or a dict) -> every option of the dataset, defaults filled in."""
    given = dict(pairs) if isinstance(pairs, dict) else {}
    if not isinstance(pairs, dict):
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise DataError(f"--data-opt {pair!r}: expected key=value")
            given[key.strip()] = value.strip()
    for key, value in given.items():
        if key in spec.free_options:
            continue  # any value: the reader says what it cannot use
        if key not in spec.options:
            valid = ", ".join([*spec.options, *spec.free_options]) or "none"
            raise DataError(f"--data-opt {key}: {spec.name} has no option {key!r} (its options: {valid})")
        if value not in spec.options[key]:
            raise DataError(
                f"--data-opt {key}={value}: {spec.name} takes {key} in {', '.join(spec.options[key])}"
            )
    chosen = {k: given.get(k, allowed[0]) for k, allowed in spec.options.items()}
    return chosen | {k: given.get(k, default) for k, default in spec.free_options.items()}


def open_dataset(
    name: str, root: Path | None, split: str, options: tuple[str, ...] | dict = ()
) -> ImageSource:
    """The ImageSource of one split; a wrong split or option, or a missing file, is a DataError."""
    spec = get_dataset(name)
    spec.check_split(split)
    return spec.read(Path(root) if root is not None else None, split, parse_options(spec, options))
