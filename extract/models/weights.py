"""Checkpoint I/O for every model family, without importing any model library: safe loading
(weights-only unpickling), file hashes, shape checks, and the one record of what weights a
model has, which stores, samples and fine-tuning runs all write."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from extract.store.files import file_sha256  # noqa: F401 - part of this module's interface


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used with the requested preset."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain state_dict file with weights-only unpickling (never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only torch checkpoint ({first})") from None
    # a training checkpoint's weights under "state_dict", or "model" (MAE's and DINO's releases)
    wrapper = next(
        (k for k in ("state_dict", "model") if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None
    )
    if wrapper is not None:
        obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class FitReport:
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple, tuple], ...]  # key, checkpoint shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 5) -> str:
        def head(items):
            shown = ", ".join(items[:limit])
            return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys: {head(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys: {head(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} {tuple(c)} in file vs {tuple(m)} in model" for k, c, m in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatches: {head(shapes)}")
        return "; ".join(parts)


def fit_of(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> FitReport:
    """Compare a file's parameter shapes (name -> shape) with a model's."""
    return FitReport(
        missing=tuple(k for k in expected if k not in found),
        unexpected=tuple(k for k in found if k not in expected),
        mismatched=tuple(
            (k, tuple(found[k]), tuple(expected[k]))
            for k in expected
            if k in found and tuple(found[k]) != tuple(expected[k])
        ),
    )


def weights_record(path: str | Path | None, *, random_init: bool = False, seed: int = 0) -> dict:
    """What a model's weights are: a file (its name and sha256) or a seeded random init."""
    if random_init:
        return {"random_init": True, "init_seed": seed}
    path = Path(path)
    return {"random_init": False, "checkpoint": path.name, "sha256": file_sha256(path)}


def weights_label(record: dict) -> str:
    """A short name for a weights record: `random-init`, or `<file>@<first 12 of its sha256>`."""
    if record.get("random_init"):
        return "random-init"
    return f"{record['checkpoint']}@{record['sha256'][:12]}"
