"""Progress for long work: a tqdm bar (rate, ETA) where stderr is a terminal; elsewhere (CI, a
log file, a pipe) no bar, whose every redraw would be a line, and one line per epoch or shard
in its place."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

# what a run's log file holds (run_log): arguments, provenance, epoch lines, the final table
LOG = logging.getLogger("diffprobe")


def on_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar, drawn only when `enabled` and stderr is a terminal."""
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(disable=not (enabled and on_terminal()), **kwargs)


def line(enabled: bool, text: str) -> None:
    """One line in place of a bar: printed when `enabled` and the bar is off (not a terminal);
    always written to the run's log file when one is open."""
    LOG.info(text)
    if enabled and not on_terminal():
        print(text, file=sys.stderr, flush=True)


def warn(text: str) -> None:
    """One warning line on stderr (always) and in the run's log file."""
    LOG.warning(text)
    print(f"warning: {text}", file=sys.stderr, flush=True)


class Lines:
    """Counts done work and prints `line`s of it with rate and ETA, for loops whose bar is off."""

    def __init__(self, enabled: bool, desc: str, total: int, unit: str):
        self.enabled, self.desc, self.total, self.unit = enabled, desc, total, unit
        self.done, self.started = 0, time.perf_counter()

    def add(self, n: int, what: str = "") -> None:
        self.done += n
        seconds = time.perf_counter() - self.started
        rate = self.done / seconds if seconds > 0 else float("nan")
        eta = (self.total - self.done) / rate if rate and rate == rate and rate > 0 else float("nan")
        detail = f" {what}" if what else ""
        line(
            self.enabled,
            f"{self.desc}:{detail} {self.done}/{self.total} {self.unit} "
            f"({rate:.1f} {self.unit}/s, ETA {_clock(eta)})",
        )


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@contextmanager
def run_log(folder: Path, name: str, enabled: bool = True):
    """A timestamped log file `folder/name.YYYYmmddTHHMMSSZ.log` that receives LOG while the block
    runs; yields its path (None when not enabled, e.g. on ranks other than 0)."""
    if not enabled:
        yield None
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        yield path
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)
        handler.close()
