"""`analysis fid`: FID (Inception-v3) or a Fréchet distance in another feature space, with
precision and recall, between samples and real images, as steps over stores:

1. `python -m extract features` writes the samples' features into a store;
2. the same for the real images (a dataset split, at the samples' size and channels), or the
   reference is a file of statistics (`mu`, `sigma`, as the public FID code writes them);
3. the distance reads the two stores (analysis.distance), as `analysis fd` does.

Steps 1 and 2 run in a child process, so analysis itself never loads a network. Their stores
live under `cache` in folders named by a hash of their arguments: a store made with the same
arguments is complete and is reused (a dataset's features are computed once); samples that
changed under the same path replace their store. The real side's store is thus the cached
reference statistics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from analysis.distance import store_rows, store_stats
from analysis.fid_stats import Side, load_stats, save_stats
from analysis.frechet import frechet_distance, precision_recall
from analysis.gen_metrics import IS_SPLITS, class_shares, inception_score, kernel_distance, total_variation
from extract.store.schema import CHANNEL_WORDS, FeatureKey, open_complete

FEATURE_KEY = FeatureKey(0, 0, None)  # the one key of a feature-network store (extract.models.feature_store)
# feature families whose network also gives class logits, and that family
CLASS_LOGITS = {"classifier": "classifier-logits"}


class StepFailed(Exception):
    """A child step failed; it has already printed its one-line error."""

    def __init__(self, returncode: int):
        super().__init__(f"a step failed with exit status {returncode}")
        self.returncode = returncode


@dataclass(frozen=True)
class DataSpec:
    """Real images from extract's dataset registry."""

    data: str
    split: str = "test"
    data_root: Path | None = None
    data_opts: tuple[str, ...] = ()
    limit: int | None = None  # a seeded random subset, as `extract run --limit`


@dataclass(frozen=True)
class FidConfig:
    fake: Path | None = None  # samples: an `extract sample` folder, a folder of PNGs, or a .npz (arr_0)
    real: Path | None = None  # statistics .npz (mu, sigma) or images .npz (arr_0)
    data: DataSpec | None = None  # or real images from a dataset
    split_half: bool = False  # the split-half baseline: the dataset's two halves against each other
    image_size: int | None = None  # real images' size [default: the samples']
    channels: int | None = None  # real images' channels [default: the samples']
    features: str = "inception"  # inception | classifier:FILE | torchvision:NAME | pixels
    inception_weights: Path | None = None
    weights: Path | None = None
    random_init: bool = False
    device: str = "cpu"
    k: int = 3
    pr_rows: int = 5000
    kid_subsets: int = 100  # the kernel distance: this many random subsets (torch-fidelity's default) ...
    kid_subset_size: int = 1000  # ... of this many rows of each side (fewer when a side has fewer rows)
    # with Inception features: the samples' Inception Score from the logits (a second Inception pass)
    inception_score: bool = True
    # with classifier features and real images: each side's class shares from the classifier's logits
    class_balance: bool = True
    batch_size: int = 100
    seed: int = 0
    cache: Path = Path("cache/fid")
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
    stores: tuple[str | None, str]
    seconds: float
    version: str = ""
    kid: tuple[float, float] | None = None  # (mean, std) over subsets; named KID in Inception's features
    kid_metric: str | None = None
    kid_subset_size: int | None = None
    inception_score: tuple[float, float] | None = None  # (mean, std) over 10 splits of the samples
    notes: tuple[str, ...] = ()  # why a metric is absent
    # the samples' share of each class, by the classifier's argmax
    class_shares: tuple[float, ...] | None = None
    real_class_shares: tuple[float, ...] | None = None  # the real images', by the same classifier
    class_tv: float | None = None  # total variation distance between the two, in [0, 1]

    def line(self) -> str:
        pr = (
            f", precision {self.precision:.3f}, recall {self.recall:.3f} (k={self.k})"
            if self.precision is not None
            else ", precision/recall: no real features"
        )
        kid = ""
        if self.kid:
            kid = f", {self.kid_metric} {self.kid[0]:.5f} +- {self.kid[1]:.5f}"
            kid += f" (subsets of {self.kid_subset_size})"
        isc = (
            f", Inception Score {self.inception_score[0]:.3f} +- {self.inception_score[1]:.3f}"
            if self.inception_score
            else ""
        )
        notes = "".join(f"\n  {n}" for n in self.notes)
        classes = ""
        if self.class_shares is not None:
            fewest = int(np.argmin(self.class_shares))
            share = 100 * self.class_shares[fewest]
            classes = (
                f", class shares TV {self.class_tv:.3f} from the real images' "
                f"(fewest: class {fewest}, {share:.1f}%)"
            )
        counts = f"{self.n_fake} samples vs {self.n_real or '?'} real"
        return f"{self.metric} {self.fd:.4f}{pr}{kid}{isc}{classes}; {counts}{notes}"

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- step: a store of features
def _feature_args(cfg: FidConfig) -> list[str]:
    args = [
        "--features",
        cfg.features,
        "--batch-size",
        str(cfg.batch_size),
        "--seed",
        str(cfg.seed),
        "--device",
        cfg.device,
    ]
    args += ["--inception-weights", str(cfg.inception_weights)] if cfg.inception_weights else []
    args += ["--weights", str(cfg.weights)] if cfg.weights else []
    args += ["--random-init"] if cfg.random_init else []
    return args + ([] if cfg.progress else ["--no-progress"])


def _data_args(spec: DataSpec) -> list[str]:
    args = ["--data", spec.data, "--split", spec.split]
    args += ["--data-root", str(Path(spec.data_root).resolve())] if spec.data_root else []
    args += [a for opt in spec.data_opts for a in ("--data-opt", opt)]
    return args + (["--limit", str(spec.limit)] if spec.limit else [])


def feature_store(cfg: FidConfig, name: str, args: list[str]) -> Path:
    """The store `extract features ARGS` writes, under cfg.cache in a folder named by a hash of
    the arguments (made now, resumed, or reused whole). Runs in a child process."""
    full = [*args, *_feature_args(cfg)]
    digest = hashlib.sha256(json.dumps([a for a in full if a != "--no-progress"]).encode()).hexdigest()[:16]
    out = Path(cfg.cache) / f"{name}-{digest}.zarr"
    code = run_features([*full, "--out", str(out), "--overwrite"])
    if code != 0:
        raise StepFailed(code)
    return out


def run_features(argv: list[str]) -> int:
    """`python -m extract features ARGV` in a child process, so that analysis itself never loads a
    network; its exit status (its errors are on stderr)."""
    command = [sys.executable, "-m", "extract", "features", *argv]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return done.returncode


def store_side(path: Path, cfg: FidConfig) -> Side:
    store = open_complete(path)
    stats, sample = store_stats(store, FEATURE_KEY, cfg.pr_rows, cfg.seed)
    made = store.attrs["provenance"]
    return Side(stats.mean, stats.cov, stats.n, sample, made["images"], made["features"], str(path))


def _samples_store(cfg: FidConfig, path: Path, extra: list[str] = ()) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples not found: {path}")
    return feature_store(
        cfg, "samples", ["--data", "samples", "--data-root", str(path.resolve()), "--split", "all", *extra]
    )


# ---------------------------------------------------------------- the reference side
def _reference_file(cfg: FidConfig, path: Path, fake: Side) -> Side:
    """--real FILE: statistics (mu, sigma), or images (arr_0) that become a store."""
    if not path.is_file():
        raise FileNotFoundError(f"reference file not found: {path}")
    try:
        names = getattr(np.load(path, allow_pickle=False), "files", None)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    if names is None:
        raise ValueError(
            f"{path}: a single array, not an .npz; expected mu and sigma (statistics) or arr_0 (images)"
        )
    size, channels = fake.record["image_size"], fake.record["channels"]
    if "mu" not in names:
        real = store_side(_samples_store(cfg, path, ["--image-size", str(size)]), cfg)
        if real.record["channels"] != channels:
            held = CHANNEL_WORDS[real.record["channels"]]
            raise ValueError(f"{path} holds {held} images, samples are {CHANNEL_WORDS[channels]}")
        return real
    key, s = load_stats(path)
    if key is not None:
        if key["features"] != fake.features:
            raise ValueError(
                f"{path} was made with other features ({key['features'].get('features')}, weights "
                f"{key['features'].get('weights')}); "
                "compute the reference with the same --features and weights"
            )
        made = key["images"]
        if made.get("channels") not in (None, channels):
            held = CHANNEL_WORDS[made["channels"]]
            raise ValueError(
                f"{path} holds statistics of {held} images, samples are {CHANNEL_WORDS[channels]}"
            )
        if made.get("image_size") not in (None, size):
            held = f"{made['image_size']}x{made['image_size']}"
            raise ValueError(f"{path} holds statistics of {held} images, samples are {size}x{size}")
    elif fake.features.get("features") != "inception":
        raise ValueError(
            f"{path} holds external statistics (mu, sigma without a key), which are Inception features; "
            "use --features inception"
        )
    if len(s.mu) != len(fake.mu):
        raise ValueError(f"{path}: statistics of {len(s.mu)} features, the samples have {len(fake.mu)}")
    # a reference batch (images and their statistics): its features for precision/recall
    if s.sample is None and "arr_0" in names:
        s.sample = store_side(_samples_store(cfg, path, ["--image-size", str(size)]), cfg).sample
    return s


# ---------------------------------------------------------------- the comparison
def _metric_name(features: dict) -> str:
    if features.get("features") == "inception":
        if features.get("weights") == "random-init":
            return "FD (Inception-v3, random weights)"
        return "FID" if features.get("standard") else "FD (Inception-v3, non-standard weights)"
    return f"FD ({features.get('features')})"


def _sides(cfg: FidConfig) -> tuple[Side, Side]:
    """(real, fake), each read from its store (or the real side from a statistics file)."""
    if cfg.split_half:
        if cfg.data is None or cfg.fake is not None or cfg.real is not None:
            raise ValueError(
                "--split-half compares two halves of one --data split; give --data (and no --fake or --real)"
            )
        kind = [
            *(["--image-size", str(cfg.image_size)] if cfg.image_size else []),
            *(["--channels", str(cfg.channels)] if cfg.channels else []),
        ]
        name = f"{cfg.data.data}-{cfg.data.split}-{cfg.features.split(':')[0]}"
        halves = [
            store_side(feature_store(cfg, name, [*_data_args(cfg.data), *kind, "--half", half]), cfg)
            for half in ("first", "second")
        ]
        return halves[0], halves[1]
    if cfg.fake is None:
        raise ValueError("give the samples with --fake (a samples folder, a folder of PNGs or a .npz)")
    if (cfg.real is None) == (cfg.data is None):
        raise ValueError(
            "give the real side as --real FILE.npz or as --data NAME (with --data-root, --split)"
        )
    fake = store_side(_samples_store(cfg, Path(cfg.fake)), cfg)
    channels = fake.record["channels"]
    if cfg.data is None:
        return _reference_file(cfg, Path(cfg.real), fake), fake
    if cfg.channels not in (None, channels):
        raise ValueError(
            f"real images asked as {CHANNEL_WORDS[cfg.channels]} (--channels {cfg.channels}), "
            f"samples are {CHANNEL_WORDS[channels]}"
        )
    return store_side(feature_store(cfg, _real_name(cfg), _real_args(cfg, fake)), cfg), fake


def _real_name(cfg: FidConfig) -> str:
    return f"{cfg.data.data}-{cfg.data.split}-{cfg.features.split(':')[0]}"


def _real_args(cfg: FidConfig, fake: Side) -> list[str]:
    """The dataset split read at the samples' size (or --image-size) and channels."""
    return [
        *_data_args(cfg.data),
        "--image-size",
        str(cfg.image_size or fake.record["image_size"]),
        "--channels",
        str(fake.record["channels"]),
    ]


def _kid_name(features: dict) -> str:
    return _metric_name(features).replace("FID", "KID").replace("FD (", "KD (")


def _kernel(
    cfg: FidConfig, real: Side, fake: Side
) -> tuple[tuple[float, float] | None, int | None, str | None]:
    """The kernel distance between every row of the two stores, or why it cannot be computed."""
    if real.store is None:
        return None, None, "kernel distance: the real side is a statistics file (mu, sigma), not feature rows"
    a, b = (
        store_rows(open_complete(real.store), FEATURE_KEY),
        store_rows(open_complete(fake.store), FEATURE_KEY),
    )
    size = min(cfg.kid_subset_size, len(a), len(b))
    if size < 2:
        return None, None, "kernel distance: fewer than 2 rows on a side"
    # samples first, as torch-fidelity's input1: the same subsets it draws
    return kernel_distance(b, a, cfg.kid_subsets, size), size, None


def _inception_score(cfg: FidConfig, fake: Side) -> tuple[tuple[float, float] | None, str | None]:
    """The samples' Inception Score (Inception features only; from a store of their logits)."""
    if not cfg.inception_score or fake.features.get("features") != "inception":
        return None, (
            "Inception Score: needs --features inception (with --inception-weights)"
            if cfg.inception_score
            else None
        )
    if cfg.fake is None:
        return None, "Inception Score: computed for samples (--fake), not for --split-half"
    if (fake.n or 0) < IS_SPLITS:
        return None, f"Inception Score: {fake.n} samples, fewer than its {IS_SPLITS} splits"
    logits = store_rows(
        open_complete(_samples_store(dataclasses.replace(cfg, features="inception-logits"), Path(cfg.fake))),
        FEATURE_KEY,
    )
    return inception_score(logits), None


def _class_balance(cfg: FidConfig, fake_side: Side) -> tuple[dict, str | None]:
    """Each side's class shares by the classifier's argmax (from stores of its logits), and their
    total variation distance: classifier features, samples and a dataset split only."""
    source, _, weights = cfg.features.partition(":")
    logits = CLASS_LOGITS.get(source)
    if not cfg.class_balance or logits is None:
        return {}, None
    if cfg.fake is None or cfg.data is None:
        return {}, "class shares: computed for samples (--fake) against a dataset split (--data)"
    logits_cfg = dataclasses.replace(cfg, features=f"{logits}:{weights}")
    fake = class_shares(store_rows(open_complete(_samples_store(logits_cfg, Path(cfg.fake))), FEATURE_KEY))
    real_store = feature_store(logits_cfg, _real_name(logits_cfg), _real_args(logits_cfg, fake_side))
    real = class_shares(store_rows(open_complete(real_store), FEATURE_KEY))
    return {
        "class_shares": tuple(fake.tolist()),
        "real_class_shares": tuple(real.tolist()),
        "class_tv": total_variation(fake, real),
    }, None


def fid(cfg: FidConfig) -> FidResult:
    """Fréchet distance, precision/recall and the kernel distance of the samples against the real
    side, the samples' Inception Score with Inception features, and with classifier features
    each side's class shares and their total variation distance."""
    from extract import __version__

    started = time.perf_counter()
    real, fake = _sides(cfg)
    if cfg.save_stats is not None:
        save_stats(Path(cfg.save_stats), real)
    fd = frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    precision = recall = pr_rows = None
    if real.sample is not None:
        precision, recall = precision_recall(real.sample, fake.sample, k=cfg.k)
        pr_rows = (len(real.sample), len(fake.sample))
    kid, kid_size, kid_note = _kernel(cfg, real, fake)
    isc, isc_note = _inception_score(cfg, fake)
    balance, balance_note = _class_balance(cfg, fake)
    return FidResult(
        fd,
        precision,
        recall,
        real.n,
        fake.n,
        _metric_name(fake.features),
        fake.features,
        real.record,
        fake.record,
        cfg.k,
        pr_rows,
        (real.store, fake.store),
        round(time.perf_counter() - started, 2),
        __version__,
        kid,
        _kid_name(fake.features) if kid else None,
        kid_size,
        isc,
        tuple(n for n in (kid_note, isc_note, balance_note) if n),
        **balance,
    )
