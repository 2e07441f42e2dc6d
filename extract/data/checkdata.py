"""`check-data`: validate a dataset tree before hours of extraction are spent on it.

For each split: the annotation files parse (else the reader's one-line error), the image count
and class count against the official release, every listed image file present, and every image
readable (its header, or with `decode` the whole image). Flowers-102's two .mat files are also
compared with the release's md5, as torchvision does.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from extract.data.registry import DatasetSpec, get_dataset, open_dataset, parse_options
from extract.data.sources import DataError, ImageSource
from extract.store.progress import bar as progress_bar

EXAMPLES = 3  # problems list this many paths, then a count


@dataclass
class SplitCheck:
    split: str
    location: str = ""
    opened: bool = False
    images: int = 0
    classes: int = 0
    empty_classes: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self, spec: DatasetSpec, options: dict) -> str:
        if not self.opened:
            return f"{self.split}: cannot be listed"
        official = spec.official.get(self.split)
        classes = spec.official_classes(options)
        return (
            f"{self.split}: {self.images:,} images"
            + (f" (official {official:,})" if official else "")
            + f", {self.classes} classes"
            + (f" (official {classes})" if classes else "")
            + f", {len(self.missing)} missing, {len(self.unreadable)} unreadable"
        )


@dataclass
class DataCheck:
    dataset: str
    root: str
    options: dict
    splits: list[SplitCheck]

    @property
    def problems(self) -> list[str]:
        return [f"{s.split}: {p}" for s in self.splits for p in s.problems]


def _examples(items: list[str]) -> str:
    more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
    return ", ".join(items[:EXAMPLES]) + more


def _readable(source: ImageSource, i: int, decode: bool) -> str | None:
    """None, or why image i cannot be read."""
    try:
        if source.paths is not None and not decode:
            with Image.open(source.paths[i]) as img:
                img.verify()  # the file's structure, without decoding the pixels
        else:
            source.load(i).load()
        return None
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        return f"{source.ids[i]} ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"


def check_split(
    spec: DatasetSpec,
    root: Path | None,
    split: str,
    options: dict,
    decode: bool,
    workers: int,
    progress: bool,
) -> SplitCheck:
    result = SplitCheck(split)
    try:
        source = open_dataset(spec.name, root, split, options)
    except DataError as e:
        result.problems.append(str(e))
        return result
    result.opened, result.location, result.images, result.classes = (
        True,
        source.location,
        len(source),
        len(source.classes),
    )
    official = spec.official.get(split)
    if official is not None and result.images != official:
        result.problems.append(f"{result.images:,} images, the official split has {official:,}")
    classes = spec.official_classes(options)
    if classes is not None and result.classes != classes:
        result.problems.append(f"{result.classes} classes, the official dataset has {classes}")
    empty = [c for c, n in zip(source.classes, source.class_counts()) if n == 0]
    result.empty_classes = len(empty)
    if empty and len(source):
        result.problems.append(f"{len(empty)} classes have no image in this split: {_examples(empty)}")
    present = list(range(len(source)))
    if source.paths is not None:
        result.missing = [source.ids[i] for i in present if not source.paths[i].is_file()]
        present = [i for i in present if source.paths[i].is_file()]
        if result.missing:
            result.problems.append(
                f"{len(result.missing)} image files missing under {source.location}: "
                f"{_examples(result.missing)}"
            )
    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = pool.map(lambda i: _readable(source, i, decode), present, chunksize=64)
        bar = progress_bar(
            progress, iterable=reasons, total=len(present), unit="img", desc=f"check {spec.name} {split}"
        )
        result.unreadable = [r for r in bar if r is not None]
    if result.unreadable:
        result.problems.append(f"{len(result.unreadable)} unreadable images: {_examples(result.unreadable)}")
    return result


def flowers_md5(root: Path | None) -> list[str]:
    """Problems when Flowers-102's annotation files differ from the release's (torchvision's md5s)."""
    from torchvision.datasets import Flowers102

    from extract.data.find_root import dataset_folder

    folder = dataset_folder("flowers", root, ("flowers-102",), "setid.mat", "")
    problems = []
    for name, md5 in (Flowers102._file_dict["label"], Flowers102._file_dict["setid"]):
        path = folder / name
        if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != md5:
            problems.append(f"{path} differs from the official file (md5 {md5})")
    return problems


EXTRA_CHECKS = {"flowers": flowers_md5}


def check_data(
    name: str,
    root: Path | None,
    splits: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
    decode: bool = False,
    workers: int = 4,
    progress: bool = True,
) -> DataCheck:
    """Check the given splits (default: all the dataset's splits) of one dataset tree."""
    spec = get_dataset(name)
    parsed = parse_options(spec, options)
    chosen = splits or spec.splits or ("train",)
    for split in chosen:
        spec.check_split(split)
    checks = [check_split(spec, root, s, parsed, decode, workers, progress) for s in chosen]
    if name in EXTRA_CHECKS and not any(c.problems and not c.images for c in checks):
        checks[0].problems += EXTRA_CHECKS[name](root)
    return DataCheck(name, str(root), parsed, checks)


def format_check(check: DataCheck) -> str:
    spec = get_dataset(check.dataset)
    where = (
        check.root
        if check.root != "None"
        else next((s.location for s in check.splits if s.location), "its default location")
    )
    lines = [f"{check.dataset} at {where}:"]
    for s in check.splits:
        lines.append(f"  {s.line(spec, check.options)}")
        lines += [f"    - {p}" for p in s.problems]
    lines.append(f"{len(check.problems)} problem(s)" if check.problems else "ok")
    return "\n".join(lines)
