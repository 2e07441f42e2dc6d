"""Fréchet distance (FID with Inception-v3) and precision/recall between real images and samples.

Real images come from a dataset of extract's registry, preprocessed as extraction does (center
crop to the samples' size, their channel count), or from a reference file: statistics (`mu`,
`sigma`, as the public FID code and `--save-stats` write them) or images (`arr_0`). Samples
come from a folder of PNGs (what `extract sample` writes) or a guided-diffusion `.npz`.

Statistics stream in float64 (analysis.frechet.GaussianStats; no n x n matrix); a seeded sample
of at most `pr_rows` feature rows per side feeds precision and recall. A dataset's statistics
are cached in a file named by the hash of everything that made them (dataset, split, rows,
preprocessing, feature extractor and its weights' sha256) and reused only when the key stored
inside equals the one asked for. Imports torch (through the extractors): loaded only by `fid`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from analysis.features import Extractor, FeatureSpec, build_extractor
from analysis.frechet import GaussianStats, frechet_distance, precision_recall

STATS_FORMAT = "diffprobe-fid-stats-1"
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
CHANNEL_WORDS = {1: "grayscale", 3: "RGB"}


# ---------------------------------------------------------------- image sets
@dataclass
class ImageSet:
    """n uint8 images (H = W = size, C = channels) read in batches; `record` says what they are."""

    record: dict
    n: int
    size: int
    channels: int
    read: object = field(repr=False)  # (start, stop) -> uint8 (stop - start, size, size, channels)

    def __post_init__(self):
        self.record = {**self.record, "image_size": self.size, "channels": self.channels}

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        for a in range(0, self.n, batch):
            yield self.read(a, min(a + batch, self.n))


def _png_files(path: Path) -> list[Path]:
    folder = path / "png" if (path / "png").is_dir() else path  # an `extract sample` folder holds png/
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def folder_images(path: str | Path) -> ImageSet:
    """The PNGs of a folder (or of an `extract sample` folder's png/), in name order. Every
    image must have the same size and the same kind (grayscale or RGB)."""
    from PIL import Image

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"samples folder not found: {path}")
    files = _png_files(path)
    if not files:
        raise ValueError(f"{path}: no PNG images")
    kinds: dict[tuple, list[Path]] = {}
    for f in files:  # headers only: size and mode come without decoding the pixels
        try:
            with Image.open(f) as img:
                w, h, mode = *img.size, img.mode
        except OSError as e:
            raise ValueError(f"{f}: not a readable image ({e})") from None
        kinds.setdefault((w, h, 1 if mode in GRAY_MODES else 3), []).append(f)
    if len(kinds) > 1:
        parts = [f"{w}x{h} {CHANNEL_WORDS[c]} ({len(fs)}, e.g. {fs[0].name})" for (w, h, c), fs in sorted(kinds.items(), key=lambda kv: -len(kv[1]))]
        raise ValueError(f"{path}: mixed images, {'; '.join(parts)}; a sample set must be of one size and one kind")
    (w, h, channels), = kinds
    if w != h:
        raise ValueError(f"{path}: images are {w}x{h}; expected square samples")

    def read(a: int, b: int) -> np.ndarray:
        mode = "L" if channels == 1 else "RGB"
        return np.stack([np.asarray(Image.open(f).convert(mode)).reshape(h, w, channels) for f in files[a:b]])

    return ImageSet({"kind": "folder", "path": str(path), "images": len(files)}, len(files), w, channels, read)


def npz_images(path: str | Path, key: str = "arr_0") -> ImageSet:
    """Images of a guided-diffusion sample file: arr_0, uint8 (N, H, W, C) or (N, H, W)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        arrays = np.load(path, allow_pickle=False)
        if key not in arrays:
            raise ValueError(f"{path}: no '{key}' array (found {', '.join(arrays.files) or 'none'}); expected images as arr_0, uint8 NHWC")
        images = arrays[key]
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[1] != images.shape[2]:
        raise ValueError(f"{path}: '{key}' is {images.dtype} {images.shape}; expected uint8 (N, H, W, C) with square images and C 1 or 3")
    if not len(images):
        raise ValueError(f"{path}: '{key}' holds no images")
    return ImageSet({"kind": "npz", "path": str(path), "images": len(images)}, len(images), images.shape[1], images.shape[-1],
                    lambda a, b: images[a:b])  # fmt: skip


def fake_images(path: str | Path) -> ImageSet:
    """Samples: a folder of PNGs or a .npz (arr_0)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return npz_images(path)
    return folder_images(path)


@dataclass(frozen=True)
class DataSpec:
    """Real images from extract's dataset registry, preprocessed as extraction does."""

    data: str
    split: str = "test"
    data_root: Path | None = None
    data_opts: tuple[str, ...] = ()
    limit: int | None = None  # a seeded random subset, as `extract run --limit`
    seed: int = 0
    half: str | None = None  # "first" or "second" half of a seeded permutation of the rows: the floor


def dataset_images(spec: DataSpec, size: int, channels: int) -> ImageSet:
    """A dataset split at size x size with `channels` channels: extract's center crop (box halving,
    bicubic short side, center crop) of the image in grayscale or RGB, kept as uint8."""
    from extract.data.registry import open_dataset
    from extract.data.sources import PREPROCESSING, center_crop, subset_indices, to_mode

    source = open_dataset(spec.data, spec.data_root, spec.split, spec.data_opts)
    rows = subset_indices(len(source), spec.limit, spec.seed)
    if spec.half is not None:
        order = np.random.default_rng(spec.seed).permutation(rows)
        cut = len(order) // 2
        rows = np.sort(order[:cut] if spec.half == "first" else order[cut : 2 * cut])
    if len(rows) < 2:
        raise ValueError(f"{spec.data} {spec.split}: {len(rows)} images selected; statistics need at least 2")

    def read(a: int, b: int) -> np.ndarray:
        return np.stack([np.asarray(center_crop(to_mode(source.load(int(i)), channels), size)).reshape(size, size, channels) for i in rows[a:b]])

    record = {"kind": "dataset", "data": spec.data, "split": spec.split, "data_opts": list(spec.data_opts), "limit": spec.limit,
              "seed": spec.seed, "half": spec.half, "images": int(len(rows)), "fingerprint": source.fingerprint(),
              "preprocessing": f"{PREPROCESSING} (kept as uint8)", "image_size": size, "channels": channels}  # fmt: skip
    return ImageSet(record, int(len(rows)), size, channels, read)


# ---------------------------------------------------------------- statistics
@dataclass
class SetStats:
    stats: GaussianStats | None  # None for external mu/sigma
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    sample: np.ndarray | None  # up to pr_rows feature rows for precision/recall
    record: dict


def check_fits(images: ImageSet, extractor: Extractor) -> None:
    if extractor.channels is not None and images.channels != extractor.channels:
        raise ValueError(f"{extractor.name} features take {CHANNEL_WORDS[extractor.channels]} images; "
                         f"{images.record.get('path') or images.record.get('data')} is {CHANNEL_WORDS[images.channels]}")  # fmt: skip
    if extractor.size is not None and images.size != extractor.size:
        raise ValueError(f"{extractor.name} features take {extractor.size}x{extractor.size} images; these are {images.size}x{images.size}")


def compute_stats(images: ImageSet, extractor: Extractor, *, batch: int = 100, pr_rows: int = 5000, seed: int = 0, progress: bool = False) -> SetStats:
    """Streamed mean and covariance of the set's features, and a seeded sample of pr_rows rows."""
    from tqdm import tqdm

    check_fits(images, extractor)
    picked = np.zeros(images.n, bool)
    picked[np.random.default_rng(seed).permutation(images.n)[:pr_rows]] = True
    stats, sample, at = GaussianStats(), [], 0
    with tqdm(total=images.n, unit="img", desc=f"{extractor.name} features", disable=not progress) as bar:
        for x in images.batches(batch):
            f = extractor(x)
            stats.add(f)
            sample.append(f[picked[at : at + len(f)]])
            at += len(f)
            bar.update(len(f))
    if stats.n < 2:
        raise ValueError("statistics need at least 2 images")
    return SetStats(stats, stats.mean, stats.cov, stats.n, np.concatenate(sample), {**images.record, "features": extractor.record})


def stats_key(images: ImageSet, extractor: Extractor, pr_rows: int, seed: int) -> dict:
    return {"format": STATS_FORMAT, "images": images.record, "features": extractor.record, "pr_rows": pr_rows, "pr_seed": seed}


def save_stats(path: Path, s: SetStats, key: dict) -> None:
    """mu and sigma (the public FID code's names) with the key and the precision/recall sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, mu=s.mu, sigma=s.sigma, n=np.int64(s.n), key=np.array(json.dumps(key, sort_keys=True)),
                 pr_features=(s.sample if s.sample is not None else np.zeros((0, len(s.mu)))).astype(np.float32))  # fmt: skip
    os.replace(tmp, path)  # written whole or not at all: a file under the real name is complete


def load_stats(path: Path) -> tuple[dict | None, SetStats]:
    """(the key stored in the file, or None for external statistics, and the statistics)."""
    try:
        z = np.load(path, allow_pickle=False)
        if "mu" not in z or "sigma" not in z:
            raise ValueError(f"{path}: no 'mu' and 'sigma' arrays (found {', '.join(z.files) or 'none'})")
        mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
        key = json.loads(str(z["key"])) if "key" in z else None
        sample = np.asarray(z["pr_features"], np.float64) if "pr_features" in z and len(z["pr_features"]) else None
        n = int(z["n"]) if "n" in z else None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable statistics file ({e})") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    # statistics this code made describe their images (dataset, split, rows ...); external ones only their file
    record = {**key["images"], "statistics": str(path)} if key else {"kind": "statistics", "path": str(path), "external": True}
    return key, SetStats(None, mu, sigma, n, sample, record)


def cached_stats(images: ImageSet, extractor: Extractor, cache: Path | None, **kw) -> tuple[SetStats, str | None]:
    """A dataset's statistics from the cache when a file there holds the same key, else computed
    (and written to the cache). Returns the statistics and the cache file used, if any."""
    key = json.loads(json.dumps(stats_key(images, extractor, kw.get("pr_rows", 5000), kw.get("seed", 0)), default=str))
    if cache is None:
        return compute_stats(images, extractor, **kw), None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache) / f"{images.record.get('data', 'images')}-{images.record.get('split', '')}-{extractor.name}-{digest}.npz"
    if path.is_file():
        try:
            stored, s = load_stats(path)
        except ValueError:
            stored = None
        if stored == key:
            return s, str(path)
    s = compute_stats(images, extractor, **kw)
    save_stats(path, s, key)
    return s, str(path)


# ---------------------------------------------------------------- the comparison
@dataclass(frozen=True)
class FidConfig:
    fake: Path | None = None  # samples folder or .npz
    real: Path | None = None  # statistics .npz (mu, sigma) or images .npz (arr_0)
    data: DataSpec | None = None  # or real images from a dataset
    split_half: bool = False  # the floor: the dataset's two halves against each other
    image_size: int | None = None  # real images' size [default: the samples']
    channels: int | None = None  # real images' channels [default: the samples']
    features: FeatureSpec = FeatureSpec()
    k: int = 3
    pr_rows: int = 5000
    batch_size: int = 100
    seed: int = 0
    cache: Path | None = Path("cache/fid")
    save_stats: Path | None = None  # also write the real side's statistics here
    progress: bool = True


@dataclass
class FidResult:
    fd: float
    precision: float | None
    recall: float | None
    n_real: int | None
    n_fake: int
    metric: str
    features: dict
    real: dict
    fake: dict
    k: int
    pr_rows: tuple[int, int] | None
    stats_cache: str | None
    seconds: float
    version: str = ""

    def line(self) -> str:
        pr = f", precision {self.precision:.3f}, recall {self.recall:.3f} (k={self.k})" if self.precision is not None else ", precision/recall: no real features"
        return f"{self.metric} {self.fd:.4f}{pr}; {self.n_fake} samples vs {self.n_real or '?'} real"

    def to_dict(self) -> dict:
        return asdict(self)


def _metric_name(extractor: Extractor) -> str:
    if extractor.name == "inception":
        if extractor.record.get("weights") == "random-init":
            return "FD (Inception-v3, random weights)"
        return "FID" if extractor.record.get("standard") else "FD (Inception-v3, non-standard weights)"
    return f"FD ({extractor.name})"


def _real_side(cfg: FidConfig, extractor: Extractor, size: int, channels: int) -> tuple[SetStats, str | None]:
    if (cfg.real is None) == (cfg.data is None):
        raise ValueError("give the real side as --real FILE.npz or as --data NAME (with --data-root, --split)")
    kw = dict(batch=cfg.batch_size, pr_rows=cfg.pr_rows, seed=cfg.seed, progress=cfg.progress)
    if cfg.data is not None:
        real_size, real_channels = cfg.image_size or size, cfg.channels or channels
        if real_channels != channels:
            raise ValueError(f"real images asked as {CHANNEL_WORDS[real_channels]} (--channels {real_channels}), samples are {CHANNEL_WORDS[channels]}")
        return cached_stats(dataset_images(cfg.data, real_size, real_channels), extractor, cfg.cache, **kw)
    path = Path(cfg.real)
    if not path.is_file():
        raise FileNotFoundError(f"reference file not found: {path}")
    names = np.load(path, allow_pickle=False).files
    if "mu" in names:
        key, s = load_stats(path)
        if key is not None:
            if key["features"] != extractor.record:
                raise ValueError(f"{path} was made with other features ({key['features'].get('features')}, weights "
                                 f"{key['features'].get('weights')}); compute the reference with the same --features and weights")  # fmt: skip
            made = key["images"]
            if made.get("channels") not in (None, channels):
                raise ValueError(f"{path} holds statistics of {CHANNEL_WORDS[made['channels']]} images, samples are {CHANNEL_WORDS[channels]}")
            if made.get("image_size") not in (None, size):
                raise ValueError(f"{path} holds statistics of {made['image_size']}x{made['image_size']} images, samples are {size}x{size}")
        elif extractor.name != "inception":
            raise ValueError(f"{path} holds external statistics (mu, sigma without a key), which are Inception features; use --features inception")
        if extractor.dim > 0 and len(s.mu) != extractor.dim:
            raise ValueError(f"{path}: statistics of {len(s.mu)} features, the extractor gives {extractor.dim}")
        if s.sample is None and "arr_0" in names:  # a reference batch (images and their statistics): features for precision/recall
            s.sample = compute_stats(npz_images(path), extractor, **kw).sample
        return s, None
    images = npz_images(path)
    if images.channels != channels:
        raise ValueError(f"{path} holds {CHANNEL_WORDS[images.channels]} images, samples are {CHANNEL_WORDS[channels]}")
    return compute_stats(images, extractor, **kw), None


def fid(cfg: FidConfig) -> FidResult:
    """Fréchet distance and precision/recall of the samples against the real side."""
    from extract import __version__

    started = time.perf_counter()
    if cfg.split_half:
        if cfg.data is None or cfg.fake is not None or cfg.real is not None:
            raise ValueError("--split-half compares two halves of one --data split; give --data (and no --fake or --real)")
        fake = None
    else:
        if cfg.fake is None:
            raise ValueError("give the samples with --fake (a folder of PNGs or a .npz)")
        fake = fake_images(cfg.fake)  # read first: bad samples fail before any network is built
    extractor = build_extractor(cfg.features)
    kw = dict(batch=cfg.batch_size, pr_rows=cfg.pr_rows, seed=cfg.seed, progress=cfg.progress)
    if fake is None:
        from dataclasses import replace

        size = cfg.image_size or extractor.size
        if size is None:
            raise ValueError("--split-half with these features needs --image-size")
        channels = cfg.channels or extractor.channels or 3
        real, cache_file = cached_stats(dataset_images(replace(cfg.data, half="first"), size, channels), extractor, cfg.cache, **kw)
        fake_stats = compute_stats(dataset_images(replace(cfg.data, half="second"), size, channels), extractor, **kw)
    else:
        real, cache_file = _real_side(cfg, extractor, fake.size, fake.channels)
        fake_stats = compute_stats(fake, extractor, **kw)
    if cfg.save_stats is not None:
        save_stats(Path(cfg.save_stats), real, {"format": STATS_FORMAT, "images": real.record, "features": extractor.record})
    fd = frechet_distance(real.mu, real.sigma, fake_stats.mu, fake_stats.sigma)
    precision = recall = pr_rows = None
    if real.sample is not None:
        precision, recall = precision_recall(real.sample, fake_stats.sample, k=cfg.k)
        pr_rows = (len(real.sample), len(fake_stats.sample))
    return FidResult(fd, precision, recall, real.n, fake_stats.n, _metric_name(extractor), extractor.record, real.record, fake_stats.record,
                     cfg.k, pr_rows, cache_file, round(time.perf_counter() - started, 2), __version__)  # fmt: skip
