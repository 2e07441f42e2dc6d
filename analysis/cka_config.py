"""What a CKA map compares and how: one frozen record, in a module that loads no numpy, so the
command line can read its defaults for `--help`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KERNELS = ("linear", "rbf", "minibatch")
LINEAR_PATHS = ("auto", "moments", "gram", "pairwise", "tiles")
ESTIMATORS = ("biased", "unbiased")
DEFAULT_MAX_BYTES = 2 << 30


@dataclass(frozen=True)
class CkaConfig:
    """CKA of every selected key of store `a` against every selected key of store `b` (or of `a`
    itself). An empty filter (ts, bs, pools) selects every key.

    kernel: 'linear' (exact; by feature moments, per-key Gram matrices, one pair at a time or
    tiles, whichever fits in max_bytes: `analysis.linear_paths`; `linear_path` forces one),
    'rbf' (bandwidth x median distance, at most max_rows images) or 'minibatch' (linear kernel,
    unbiased HSIC summed over minibatches of `batch` rows in a seeded shuffled order, `seed`, so
    that batches mix classes on a class-sorted store).

    estimator: 'biased' (Kornblith et al.'s HSIC; inflated where a key's width far exceeds the
    number of images) or 'unbiased' (Song et al.'s HSIC in the same ratio), for the linear and
    rbf kernels; minibatch CKA is unbiased by construction. Empty: biased, or minibatch's own."""

    a: Path
    b: Path | None = None
    labels: tuple[str, str] = ("A", "B")
    ts: tuple[int, ...] = ()
    bs: tuple[int, ...] = ()
    pools: tuple[int | None, ...] = ()
    kernel: str = "linear"
    block_rows: int = 4096
    batch: int = 256
    max_rows: int = 5000
    bandwidth: float = 0.5
    seed: int = 0
    max_bytes: int = DEFAULT_MAX_BYTES
    linear_path: str = "auto"
    # cuda, cuda:1, ...: the tiles path runs there (float64 torch)
    device: str = "cpu"
    progress: bool = True
    estimator: str = ""

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if self.estimator not in ("", *ESTIMATORS):
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if self.kernel == "minibatch" and self.estimator == "biased":
            raise ValueError("minibatch CKA sums unbiased HSICs over minibatches: it has no biased estimator")

    @property
    def hsic(self) -> str:
        """The HSIC estimator this map uses: 'biased' or 'unbiased'."""
        return self.estimator or ("unbiased" if self.kernel == "minibatch" else "biased")
