"""What `analysis align` compares and how: one frozen record, in a module that loads no numpy,
so the command line can read its defaults for `--help`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.cka_config import DEFAULT_MAX_BYTES

METRICS = ("mutual-knn", "cknna", "unbiased-cka")


@dataclass(frozen=True)
class AlignConfig:
    """Store `a`'s keys (filtered by ts, bs, pools; empty: all) against one key of store `b`
    (`against`, e.g. 't0/b5/full'; empty: b's only key)."""

    a: str | Path
    b: str | Path
    labels: tuple[str, str] = ("A", "B")
    ts: tuple[int, ...] = ()
    bs: tuple[int, ...] = ()
    pools: tuple[int | None, ...] = ()
    against: str = ""
    metrics: tuple[str, ...] = METRICS
    k: int = 10
    max_bytes: int = DEFAULT_MAX_BYTES
    block_rows: int = 4096
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(
                f"unknown alignment metric {unknown or '(none)'}; choose from {', '.join(METRICS)}"
            )
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
