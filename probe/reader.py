"""Reading cached features for head training: checks, splits, statistics and the epoch stream.

Rows are read in blocks (whole inner chunks of every requested array) and an epoch
visits them in a shuffled order that depends only on (seed, epoch, window size):
blocks in a permuted order are grouped into windows of about `window_rows` rows, and
rows are permuted within each window. Streaming from the store and preloading into
memory walk the same order, so they give the same batches; memory is bounded by two
windows (the one being consumed and the one being prefetched).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import reduce
from typing import Iterator

import numpy as np

from extract.store import progress
from extract.store.location import StoreURL
from extract.store.schema import FeatureKey, FeatureStore, incompatibility, rounding_differences
from extract.store.window_order import shuffled_windows


class ProbeDataError(ValueError):
    """Features that cannot be trained or evaluated on as asked."""


def _named(diffs: list[str], a: FeatureStore, b: FeatureStore) -> str:
    return "; ".join(
        d.replace("store has", f"{a.path.name} has").replace("asked", f"{b.path.name} has") for d in diffs[:3]
    )


def check_compatible(reference: FeatureStore, other: FeatureStore) -> list[str]:
    """Refuse stores whose features come from another model, weights or preprocessing, or whose
    labels number other classes. Stores that differ only in micro-batch or device type are used
    together: one warning line, returned (to be recorded with the results)."""
    diffs = incompatibility(reference, other)
    if diffs:
        raise ProbeDataError(
            f"{reference.path} and {other.path} hold features of different models or preprocessing: "
            f"{_named(diffs, reference, other)}"
        )
    warnings = []
    rounding = rounding_differences(reference, other)
    if rounding:
        warnings.append(
            f"{reference.path.name} and {other.path.name} were extracted with another micro-batch or device "
            f"({_named(rounding, reference, other)}): "
            "their features agree up to float rounding, not bit for bit"
        )
        progress.warn(warnings[-1])
    ours, theirs = reference.classes(), other.classes()
    if (
        ours and theirs and ours != theirs
    ):  # e.g. a class subset on one split only: labels would mean other classes
        first = next((k for k, (x, y) in enumerate(zip(ours, theirs)) if x != y), min(len(ours), len(theirs)))
        raise ProbeDataError(
            f"{reference.path} and {other.path} number their classes differently "
            f"({len(ours)} vs {len(theirs)} classes, "
            f"first difference at label {first}); extract both with the same --data, --data-opt and --classes"
        )
    return warnings


def store_summary(store: FeatureStore, rows: int) -> dict:
    """What a results file records about a store: path, rows used, key fields, provenance."""
    attrs = store.attrs
    key = attrs.get("key", {})
    return {
        "path": str(store.path),
        "rows": rows,
        "key": store.compatibility_key(),
        "dataset": key.get("dataset"),
        "seed": key.get("seed"),
        "views": store.views,
        "provenance": {k: v for k, v in attrs.get("provenance", {}).items() if k != "config"},
    }


def store_classes(store: FeatureStore) -> list[str]:
    return store.classes()


VIEW_MODES = ("draw", "mean")


@dataclass
class FeatureReader:
    """Blocks of rows of some (t, b, pool) arrays of one store, as float16 numpy arrays."""

    store: FeatureStore
    keys: tuple[FeatureKey, ...]
    preload: bool = False
    # a store of K views: "draw" one per row and epoch; "mean" their average, read as one view
    view_mode: str = "draw"
    _memory: dict[FeatureKey, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self):
        for key in self.keys:
            self.store.array(key)  # raises listing what the store holds
        chunk_rows = [
            int(a["chunk_rows"]) for a in self.store.attrs["arrays"] if FeatureKey.from_dict(a) in self.keys
        ]
        # a block covers whole inner chunks of every array (their row counts all divide shard_rows)
        self.block_rows = min(reduce(math.lcm, chunk_rows, 1), int(self.store.layout["shard_rows"]))
        self.n_blocks = -(-self.store.n_rows // self.block_rows)
        if self.view_mode not in VIEW_MODES:
            raise ValueError(f"view mode must be one of {', '.join(VIEW_MODES)}, got {self.view_mode!r}")
        if self.preload:
            self._memory = {k: self._as_read(self.store.array(k)[:]) for k in self.keys}

    @property
    def views(self) -> int:
        """Views per row as read: the store's, or 1 when they are averaged."""
        return 1 if self.view_mode == "mean" else self.store.views

    def _as_read(self, values: np.ndarray) -> np.ndarray:
        if self.view_mode == "mean" and self.store.views > 1:
            return (
                values.astype(np.float32).mean(1).astype(values.dtype)
            )  # (rows, V, ...) -> (rows, ...), summed in float32
        return values

    def row_shape(self, key: FeatureKey) -> tuple[int, ...]:
        """(C, h, w) of one row and view."""
        shape = tuple(self.store.array(key).shape[1:])
        return shape[1:] if self.store.views > 1 else shape

    def row_bytes(self) -> int:
        """Bytes of one row of every key as stored (fp16 or fp32 stores alike)."""
        itemsize = np.dtype(self.store.layout["dtype"]).itemsize
        return sum(itemsize * self.views * int(np.prod(self.row_shape(k))) for k in self.keys)

    def block_span(self, block: int) -> range:
        return range(block * self.block_rows, min((block + 1) * self.block_rows, self.store.n_rows))

    def read(self, block: int) -> dict[FeatureKey, np.ndarray]:
        """key -> (rows, [V,] C, h, w) for the block's rows, as stored."""
        span = self.block_span(block)
        if self._memory is not None:
            return {k: a[span.start : span.stop] for k, a in self._memory.items()}
        return {k: self._as_read(self.store.array(k)[span.start : span.stop]) for k in self.keys}


def pick_view(values: np.ndarray, views: np.ndarray | None) -> np.ndarray:
    """(n, V, ...) -> (n, ...) taking views[i] of row i; unchanged when the store has one view."""
    if views is None:
        return values
    return values[np.arange(len(values)), views]


def _nonfinite_rows(values: np.ndarray, use: np.ndarray, start: int) -> list[int]:
    """Absolute row numbers among the used rows of a block whose values hold NaN or inf."""
    ok = np.isfinite(values.reshape(len(values), -1)[use]).all(axis=1)
    return (np.flatnonzero(use)[~ok] + start).tolist()


def _refuse_nonfinite(reader: FeatureReader, bad: list[int], label: str) -> None:
    if bad:
        bad = sorted(set(bad))
        ids = reader.store.ids()
        shown = ", ".join(f"{r} ({ids[r]})" for r in bad[:5])
        raise ProbeDataError(
            f"{reader.store.path}: {label} features contain NaN or inf in {len(bad)} rows: {shown}"
        )


def check_finite(reader: FeatureReader, rows_mask: np.ndarray, label: str) -> None:
    """Refuse NaN or inf in the rows that will be used, naming the first rows that have them."""
    bad: list[int] = []
    for block in range(reader.n_blocks):
        span = reader.block_span(block)
        use = rows_mask[span.start : span.stop]
        if use.any():
            for values in reader.read(block).values():
                bad += _nonfinite_rows(values, use, span.start)
    _refuse_nonfinite(reader, bad, label)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature (x - mean) / std of one key's flattened rows; fitted on the training rows."""

    mean: np.ndarray  # (D,) float32
    std: np.ndarray  # (D,) float32

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(n, C, h, w) as stored -> (n, D) float32, standardized."""
        x = values.reshape(len(values), -1).astype(np.float32)  # a copy: the in-place ops below are safe
        x -= self.mean
        x /= self.std
        return x

    @classmethod
    def identity(cls, dim: int) -> Standardizer:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))


def fit_standardizers(
    reader: FeatureReader, rows_mask: np.ndarray, enabled: bool = True, check_mask: np.ndarray | None = None
) -> dict[FeatureKey, Standardizer]:
    """Mean and std of every feature of every key over the masked rows and all their views
    (float64 sums); identities when `enabled` is False. In the same pass, the rows of
    `check_mask` (default: the masked rows) are checked for NaN and inf, and refused by name."""
    dims = {k: int(np.prod(reader.row_shape(k))) for k in reader.keys}
    check_mask = rows_mask if check_mask is None else check_mask
    sums = {k: np.zeros(d) for k, d in dims.items()}
    squares = {k: np.zeros(d) for k, d in dims.items()}
    count, bad = 0, []
    for block in range(reader.n_blocks):
        span = reader.block_span(block)
        use, check = rows_mask[span.start : span.stop], check_mask[span.start : span.stop]
        if not (check.any() or (enabled and use.any())):
            continue
        for k, v in reader.read(block).items():
            bad += _nonfinite_rows(v, check, span.start)
            if enabled and use.any():
                x = v[use].reshape(int(use.sum()) * reader.views, -1).astype(np.float64)
                sums[k] += x.sum(0)
                squares[k] += (x * x).sum(0)
        count += int(use.sum()) * reader.views
    _refuse_nonfinite(reader, bad, "training")
    if not enabled:
        return {k: Standardizer.identity(d) for k, d in dims.items()}
    if count == 0:
        raise ProbeDataError("no training rows to fit the feature standardization on")
    out = {}
    for k in reader.keys:
        mean = sums[k] / count
        std = np.sqrt(np.maximum(squares[k] / count - mean * mean, 0.0))
        std[std < 1e-6] = 1.0  # a constant feature is centred, not blown up
        out[k] = Standardizer(mean.astype(np.float32), std.astype(np.float32))
    return out


def epoch_windows(
    reader: FeatureReader, rows_mask: np.ndarray, window_rows: int, seed: int, epoch: int
) -> list[tuple[list[int], np.ndarray]]:
    """The epoch's plan: windows of (blocks, row order within the window as absolute rows)."""
    return shuffled_windows(
        reader.store.n_rows,
        reader.block_rows,
        rows_mask,
        window_rows,
        np.random.default_rng([seed, epoch, 7]),
    )


def epoch_views(n_rows: int, views: int, seed: int, epoch: int) -> np.ndarray | None:
    """One cached view per row for this epoch (the augmentation draw), or None for one view."""
    if views == 1:
        return None
    return np.random.default_rng([seed, epoch, 11]).integers(0, views, size=n_rows)


def rank_windows(plan: list, rank: int, world: int) -> list:
    """This rank's windows: each window goes to the rank with the fewest rows so far."""
    loads, mine = [0] * world, []
    for window in plan:
        r = loads.index(min(loads))
        loads[r] += len(window[1])
        if r == rank:
            mine.append(window)
    return mine


def steps_per_epoch(plan: list, batch: int, world: int) -> int:
    """Equal step counts for every rank: the fewest full batches any rank's windows give."""
    counts = [sum(len(rows) for _, rows in rank_windows(plan, r, world)) for r in range(world)]
    return min(counts) // batch


def stream_batches(
    reader: FeatureReader,
    rows_mask: np.ndarray,
    labels: np.ndarray,
    *,
    batch: int,
    window_rows: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    prefetch: bool = True,
) -> Iterator[tuple[dict[FeatureKey, np.ndarray], np.ndarray]]:
    """One epoch of (key -> (batch, C, h, w) float16, labels (batch,)) training batches.

    Each rank walks its own windows (balanced by rows), reading only their blocks; every rank
    yields the same number of full batches, so distributed steps stay in lockstep."""
    plan = epoch_windows(reader, rows_mask, window_rows, seed, epoch)
    views = epoch_views(reader.store.n_rows, reader.views, seed, epoch)
    mine = rank_windows(plan, rank, world)
    n_steps = steps_per_epoch(plan, batch, world)

    # a store at a URL: a window's blocks are fetched at once (each is a round trip), kept in order
    fetch = ThreadPoolExecutor(max_workers=8) if isinstance(reader.store.path, StoreURL) else None

    def load(window):
        blocks, rows = window
        raw = list(fetch.map(reader.read, blocks)) if fetch else [reader.read(b) for b in blocks]
        spans = [reader.block_span(b) for b in blocks]
        where = np.empty(reader.store.n_rows, dtype=np.int64)  # absolute row -> position in the window buffer
        offset = 0
        for s in spans:
            where[s.start : s.stop] = np.arange(offset, offset + len(s))
            offset += len(s)
        take = where[rows]
        out = {}
        for k in reader.keys:
            values = np.concatenate([r[k] for r in raw])[take]
            out[k] = pick_view(values, None if views is None else views[rows])
        return out, labels[rows]

    pool = ThreadPoolExecutor(max_workers=1) if prefetch else None
    try:
        pending = pool.submit(load, mine[0]) if (pool and mine) else None
        carry: tuple[dict, np.ndarray] | None = None
        done = 0
        for i in range(len(mine)):
            current = pending.result() if pool else load(mine[i])
            if pool and i + 1 < len(mine):
                pending = pool.submit(load, mine[i + 1])
            if carry is not None:
                current = (
                    {k: np.concatenate([carry[0][k], current[0][k]]) for k in reader.keys},
                    np.concatenate([carry[1], current[1]]),
                )
            values, y = current
            start = 0
            while start + batch <= len(y) and done < n_steps:
                yield {k: v[start : start + batch] for k, v in values.items()}, y[start : start + batch]
                start += batch
                done += 1
            if done >= n_steps:
                break
            carry = ({k: v[start:] for k, v in values.items()}, y[start:])
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
        if fetch:
            fetch.shutdown(wait=True)


def eval_batches(
    reader: FeatureReader, rows_mask: np.ndarray, labels: np.ndarray
) -> Iterator[tuple[dict[FeatureKey, np.ndarray], np.ndarray, np.ndarray]]:
    """The masked rows in store order, view 0, one block at a time: (values, labels, rows)."""
    for block in range(reader.n_blocks):
        span = reader.block_span(block)
        use = rows_mask[span.start : span.stop]
        if not use.any():
            continue
        raw = reader.read(block)
        values = {k: (v[use][:, 0] if reader.views > 1 else v[use]) for k, v in raw.items()}
        rows = np.flatnonzero(use) + span.start
        yield values, labels[rows], rows


def carve_validation(labels: np.ndarray, usable: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A deterministic, class-stratified validation mask over the usable training rows."""
    val = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return val
    rng = np.random.default_rng([seed, 13])
    for c in np.unique(labels[usable]):
        rows = np.flatnonzero(usable & (labels == c))
        k = int(round(fraction * len(rows)))
        if len(rows) >= 2:
            k = min(max(k, 1), len(rows) - 1)
        else:
            k = 0
        val[rng.permutation(rows)[:k]] = True
    return val
