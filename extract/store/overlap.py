"""Do two stores hold the same images? Each store records a digest of every image's decoded
pixels (`FeatureStore.content_hashes`), so a train and a test store made from one folder, or
from splits that share files, are caught whatever the images' ids or paths.

probe and analysis call `check_overlap` on every pair of splits they read: shared images are
an error unless the caller allows them, and then one warning line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.store.errors import DataError
from extract.store.schema import FeatureStore

ALLOW_HINT = "--allow-overlap"


@dataclass(frozen=True)
class Overlap:
    """Images found in both stores: how many, and a few (id in a, id in b) pairs. `checked` is
    False when a store holds no digests (made before they were recorded, or of no images)."""

    names: str
    shared: int
    examples: tuple[tuple[str, str], ...]
    checked: bool = True

    @property
    def line(self) -> str:
        if not self.checked:
            return f"{self.names}: not checked for shared images (a store without image digests)"
        seen = "; ".join(f"{x} = {y}" for x, y in self.examples)
        return f"{self.names} share {self.shared} images" + (f" (e.g. {seen})" if seen else "")

    def record(self) -> dict:
        """What a results file keeps of the check."""
        return {
            "stores": self.names,
            "checked": self.checked,
            "shared": self.shared,
            "examples": [list(p) for p in self.examples],
        }


def _recorded(store: FeatureStore) -> tuple[np.ndarray, np.ndarray] | None:
    """(digests as (n,) structured rows, their row numbers) of the valid rows that have one."""
    digests = store.content_hashes()
    if digests is None:
        return None
    keep = store.valid() & digests.any(axis=1)
    rows = np.flatnonzero(keep)
    as_pairs = np.ascontiguousarray(digests[rows]).view([("hi", "<u8"), ("lo", "<u8")]).ravel()
    return as_pairs, rows


def shared_images(a: FeatureStore, b: FeatureStore, names: str = "", examples: int = 3) -> Overlap:
    """The images whose pixels are identical in a and in b (valid rows only)."""
    names = names or f"{a.path.name} and {b.path.name}"
    ra, rb = _recorded(a), _recorded(b)
    if ra is None or rb is None or not ra[1].size or not rb[1].size:
        return Overlap(names, 0, (), checked=False)
    (da, rows_a), (db, rows_b) = ra, rb
    in_b = np.isin(da, db)
    shared = int(np.unique(da[in_b]).size)
    pairs = []
    if shared:
        ids_a, ids_b = a.ids(), b.ids()
        for pos in np.flatnonzero(in_b)[:examples]:
            j = int(np.flatnonzero(db == da[pos])[0])
            pairs.append((str(ids_a[rows_a[pos]]), str(ids_b[rows_b[j]])))
    return Overlap(names, shared, tuple(pairs))


def check_overlap(a: FeatureStore, b: FeatureStore, allow: bool, names: str = "") -> Overlap:
    """Refuse stores that share images unless `allow`. The caller warns with `.line` when
    `.shared` (allowed) and records `.record()` in any case."""
    found = shared_images(a, b, names)
    if found.shared and not allow:
        raise DataError(
            f"{found.line}: a score on them would be measured on images it was fitted on; "
            f"use separate splits, or {ALLOW_HINT} to go on"
        )
    return found
