"""The errors every stage shares (the CLIs turn them into one line)."""

from __future__ import annotations


class StoreError(ValueError):
    """A store that is not a diffprobe store, is incomplete, or lacks what was asked for."""


class DataError(ValueError):
    """A dataset that cannot be read as asked: missing files, bad annotations, unreadable images."""
