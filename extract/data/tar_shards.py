"""WebDataset tar shards as img2dataset writes them, read by position.

A sample is the run of tar members sharing a key (webdataset's rule: the name up to the first
dot of its file name): `KEY.jpg` (or .jpeg/.png/.webp) and its label in `KEY.cls` (an integer as
text) or in a field of `KEY.json` (`--data-opt label=json:<field>`). The index is built once by
listing the members (shards sorted by name, members in tar order); image i is then read from
its shard at its byte offset, so any image loads on its own, in any process, in any order, as
every source must for a deterministic and resumable run. Ids are `<shard>/<key>`.
"""

from __future__ import annotations

import glob
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from extract.data.label_index import index_labels, optional_package, split_files
from extract.data.sources import ALL_SPLIT, DataError, ImageSource, open_image

LAYOUT = (
    "ROOT/<split>/*.tar or ROOT/<split>-*.tar (ROOT/*.tar as --split all), "
    "or ROOT = one .tar or a brace pattern such as /data/train-{000000..000146}.tar; "
    "each sample KEY.jpg|png|webp with KEY.cls or KEY.json (img2dataset's output)"
)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_OPTION = "label"
DEFAULT_LABEL = "cls"
DATASET = "webdataset"


def _wds(module: str):
    return optional_package(f"webdataset.{module}", "webdataset", DATASET)


def parse_label(value: str) -> tuple[str, str]:
    """`cls` -> ("cls", ""); `json:<field>` -> ("json", field); anything else a DataError."""
    kind, _, fieldname = value.partition(":")
    if kind == "cls" and not fieldname:
        return "cls", ""
    if kind == "json" and fieldname:
        return "json", fieldname
    raise DataError(
        f"--data-opt label={value}: webdataset takes label=cls (KEY.cls files) "
        "or label=json:<field> (a field of KEY.json)"
    )


def _expand(pattern: str) -> list[Path]:
    """A brace pattern (webdataset's syntax) or a glob, each match a shard; every one must exist."""
    if "{" in pattern or "::" in pattern:
        paths = [Path(p) for p in _wds("shardlists").expand_urls(pattern)]
    else:
        paths = [Path(p) for p in glob.glob(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{DATASET}: {len(missing)} of the {len(paths)} shards {pattern} names do not exist, "
            f"e.g. {missing[0]}"
        )
    if not paths:
        raise DataError(f"{DATASET}: no shard matches {pattern}; expected layout: {LAYOUT}")
    return sorted(paths, key=lambda p: (p.name, str(p)))


def shard_paths(root: Path | None, split: str) -> tuple[list[Path], str]:
    """(the split's shards in name order, where they are)."""
    if root is None:
        raise DataError(f"--data {DATASET} needs --data-root; expected layout: {LAYOUT}")
    text = str(root)
    if any(c in text for c in "{*?") or "::" in text:
        return _expand(text), text
    root = Path(root)
    if root.is_file():
        return [root], str(root)
    if not root.is_dir():
        raise DataError(f"{DATASET}: --data-root {root} does not exist; expected layout: {LAYOUT}")
    candidates = [(root / split, "*.tar"), (root, f"{split}-*.tar")]
    if split in ("", ALL_SPLIT):
        candidates.append((root, "*.tar"))
    found = split_files(candidates)
    if found:
        return found
    held = sorted(p.name for p in root.iterdir())[:6]
    raise DataError(
        f"{DATASET}: no {split}/*.tar or {split}-*.tar shards in {root} "
        f"(it holds: {', '.join(held) or 'nothing'}); "
        f"expected layout: {LAYOUT}"
    )


def _read_label(sample_id: str, kind: str, fieldname: str, members: dict, tar: tarfile.TarFile):
    """The raw label of one sample (an int, or with json a str/int), or a DataError naming it."""
    ext = "cls" if kind == "cls" else "json"
    if ext not in members:
        others = ", ".join(sorted(members))
        raise DataError(
            f"{DATASET}: sample {sample_id} has no .{ext} file for its label (it has: {others}); "
            "see --data-opt label="
        )
    raw = tar.extractfile(members[ext]).read()
    if kind == "cls":
        try:
            return int(raw.decode("utf-8").strip())
        except (UnicodeDecodeError, ValueError):
            raise DataError(
                f"{DATASET}: sample {sample_id}: .cls holds {raw[:40]!r}, not an integer"
            ) from None
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{DATASET}: sample {sample_id}: .json is not valid JSON") from None
    value = record.get(fieldname) if isinstance(record, dict) else None
    if value is None:
        keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        raise DataError(
            f"{DATASET}: sample {sample_id}: its .json has no label field {fieldname!r} (it has: {keys})"
        )
    return value


def _samples(tar: tarfile.TarFile, base_plus_ext):
    """(key, {extension: member}) for each run of members sharing a key, in tar order (webdataset's
    grouping)."""
    key, members = None, {}
    for info in tar:
        name = info.name
        if not info.isreg() or Path(name).name.startswith("__"):
            continue
        prefix, ext = base_plus_ext(name)
        if prefix is None:
            continue
        ext = ext.lower()
        if prefix != key or ext in members:
            if members:
                yield key, members
            key, members = prefix, {}
        members[ext] = info
    if members:
        yield key, members


def index_shard(path: Path, kind: str, fieldname: str) -> list[tuple[str, int, int, object]]:
    """(id, byte offset, size, raw label) of each sample's image in one shard."""
    base_plus_ext = _wds("tariterators").base_plus_ext
    rows = []
    try:
        with tarfile.open(path, "r:") as tar:
            for key, members in _samples(tar, base_plus_ext):
                sample_id = f"{path.stem}/{key}"
                image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
                if image is None:
                    raise DataError(
                        f"{DATASET}: sample {sample_id} has no image ({', '.join(IMAGE_EXTENSIONS)}); "
                        f"it has: {', '.join(sorted(members))}"
                    )
                rows.append(
                    (
                        sample_id,
                        image.offset_data,
                        image.size,
                        _read_label(sample_id, kind, fieldname, members, tar),
                    )
                )
    except tarfile.ReadError as e:
        raise DataError(
            f"{DATASET}: {path} is not an uncompressed tar file ({e}); shards are read by byte offset"
        ) from None
    return rows


class TarImages:
    """Image i: `size[i]` bytes at `offset[i]` of shard `shard[i]`, opened per call (fork-safe)."""

    def __init__(self, shards: list[Path], shard: np.ndarray, offset: np.ndarray, size: np.ndarray):
        self.shards, self.shard, self.offset, self.size = shards, shard, offset, size

    def read(self, i: int) -> bytes:
        with open(self.shards[int(self.shard[i])], "rb") as f:
            f.seek(int(self.offset[i]))
            data = f.read(int(self.size[i]))
        if len(data) != int(self.size[i]):
            raise OSError(f"{self.shards[int(self.shard[i])]} is shorter than its index (truncated shard?)")
        return data

    def __call__(self, i: int) -> Image.Image:
        return open_image(io.BytesIO(self.read(i)))


def webdataset(root: Path | None, split: str, opts: dict) -> ImageSource:
    """img2dataset / WebDataset shards; labels from .cls or a .json field (`label` option)."""
    kind, fieldname = parse_label(opts.get(LABEL_OPTION, DEFAULT_LABEL))
    shards, location = shard_paths(root, split)
    ids, shard, offset, size, raw = [], [], [], [], []
    for k, path in enumerate(shards):
        for sample_id, off, n, label in index_shard(path, kind, fieldname):
            ids.append(sample_id)
            shard.append(k)
            offset.append(off)
            size.append(n)
            raw.append(label)
    if len(set(ids)) != len(ids):
        seen = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise DataError(
            f"{DATASET}: sample {dup} appears twice in {location}; keys must be unique within a shard"
        )
    labels, classes = index_labels(raw, ids, location)
    images = TarImages(
        shards, np.array(shard, np.int64), np.array(offset, np.int64), np.array(size, np.int64)
    )
    return ImageSource(DATASET, split, location, ids, labels, classes, images)
