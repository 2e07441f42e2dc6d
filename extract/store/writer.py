"""The one store writer: create or resume a store, hold its lock, fill its shards, finish it.

Every kind of store (U-Net features, torchvision backbones, raw pixels, and any later model
family) is written through `write_store`, so each gets the same guarantees: a second writer is
refused, a killed run resumes where it stopped (only shards without a done marker are
computed), different arguments into an existing store are refused naming every difference,
and `complete` is set last. A kind says what it writes in a `StorePlan` (its key, the key
fields that define what its features mean, its rows and arrays) and how to compute shards in a
`fill` function; it never touches the store's layout itself.

This module needs no torch: the process group is a `extract.store.dist.ProcessGroup`
(`World()` when running alone).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from extract.store.dist import ProcessGroup, World
from extract.store.location import Location, exists, store_location
from extract.store.schema import (
    COMPATIBLE_FIELDS,
    ROUNDING_FIELDS,
    FeatureKey,
    FeatureStore,
    StoreError,
    StoreLock,
    describe_differences,
    is_store,
)


@dataclass(frozen=True)
class StorePlan:
    """What a store holds and where. `key` covers everything that changes a value: two runs
    with equal keys write equal bytes, and an existing store resumes only under an equal key.
    `compatible` names the key fields that must agree between stores used together. `out` is a
    folder or a URL (`extract.store.location.store_location`)."""

    out: Location
    key: dict
    compatible: tuple[str, ...]
    provenance: dict
    row_shapes: dict[FeatureKey, tuple[int, ...]]
    ids: list[str]
    labels: np.ndarray
    index: np.ndarray
    shard_rows: int
    views: int = 1
    dtype: str = "float16"
    overwrite: bool = False
    allow_mismatch: bool = False  # resume a store made with another micro-batch or device type


@dataclass
class Written:
    store: Location
    images: int  # images computed by this run (all ranks)
    shards_done: int
    shards_total: int
    bytes: int
    skipped: list[str] = field(default_factory=list)


# fill(store, shards) computes and writes the given shards (store.write_shard for each, in any
# order) and returns how many images it computed
Fill = Callable[[FeatureStore, list[int]], int]


# key fields that follow from the others (a timestep's noise level from the model and t), recorded
# since a later version: a store without them resumes as it was made
DERIVED_KEY_FIELDS = ("noise_levels",)


def _torn_creation(out: Location) -> bool:
    """A folder that a creation killed before any store metadata landed left behind: empty, or
    holding only zarr's temporary `*.partial` files (written, then renamed into place). Objects
    are put whole, so at a URL such a creation leaves nothing."""
    return (
        isinstance(out, Path)
        and out.is_dir()
        and all(f.is_file() and f.name.endswith(".partial") for f in out.iterdir())
    )


def prepare(plan: StorePlan) -> str | None:
    """Create, resume or refuse the store (rank 0 only). Returns an error message or None."""
    out = store_location(plan.out)
    if exists(out) and not is_store(out):
        if is_store(out, created=False):
            FeatureStore.remove(out)  # a creation that was interrupted
        elif _torn_creation(out):
            shutil.rmtree(out)
        else:
            return f"{out} exists and is not a diffprobe store; choose another --out"
    if exists(out):
        store = FeatureStore.open(out, mode="r+")
        old = store.attrs.get("key", {})
        # what a store made before a derived field was recorded lacks is no difference
        key = {k: v for k, v in plan.key.items() if k in old or k not in DERIVED_KEY_FIELDS}
        diffs = describe_differences(old, key)
        changed = {k for k in set(old) | set(key) if old.get(k) != key.get(k)}
        if diffs and changed <= set(ROUNDING_FIELDS) and not plan.overwrite:
            if not plan.allow_mismatch:
                return (
                    f"{out} was made with another micro-batch or device ({'; '.join(diffs)}); "
                    "resume with --allow-mismatch (the shards still to write will differ from the "
                    "others by float rounding), or --overwrite"
                )
            _record_mismatch(store, plan.key, changed)
            return None
        if diffs and not plan.overwrite:
            return f"{out} was made with other arguments ({'; '.join(diffs)}); use --overwrite to replace it"
        if not diffs:
            return None
        FeatureStore.remove(out)
    attrs = {"key": plan.key, "provenance": plan.provenance}
    if tuple(plan.compatible) != COMPATIBLE_FIELDS:
        # stores of the default kind keep the attrs they always had
        attrs["compatible"] = list(plan.compatible)
    FeatureStore.create(
        out,
        row_shapes=plan.row_shapes,
        ids=plan.ids,
        labels=plan.labels,
        index=plan.index,
        shard_rows=plan.shard_rows,
        views=plan.views,
        dtype=plan.dtype,
        attrs=attrs,
    )
    return None


def _record_mismatch(store: FeatureStore, key: dict, changed: set[str]) -> None:
    """A resume under another micro-batch or device: the store keeps its key (what its first
    shards were made with); `resumed_with` lists each later setting and the shards it was to write."""
    todo = np.flatnonzero(~store.done_shards()).tolist()
    record = {**{k: key.get(k) for k in sorted(changed)}, "shards": todo}
    store.group.attrs["resumed_with"] = list(store.attrs.get("resumed_with", [])) + [record]


def write_store(
    plan: StorePlan,
    fill: Fill,
    world: ProcessGroup | None = None,
    started: float | None = None,
    before: Callable[[], None] | None = None,
) -> Written:
    """Write (or resume) a whole store; collective when `world` spans several processes.
    Each rank fills the unwritten shards s with s % size == rank. `started` (a perf_counter
    time, default now) dates the run's seconds recorded in the store's `last_run`. `before`
    runs on the main rank under the store's lock, ahead of creating or resuming the store
    (what a run keeps beside its store, e.g. sampling's folder); a ValueError it raises stops
    every rank with its message."""
    world = world or World()
    started = time.perf_counter() if started is None else started
    lock: StoreLock | None = None
    try:
        error = None
        if world.is_main:
            try:
                lock = StoreLock(plan.out).acquire()
                if before is not None:
                    before()
            except ValueError as e:
                error = str(e)
            else:
                error = prepare(plan)
        error = world.broadcast(error)
        if error:
            raise StoreError(error)
        store = FeatureStore.open(plan.out, mode="r+")
        done = store.done_shards()
        mine = [s for s in range(store.n_shards) if s % world.size == world.rank and not done[s]]
        if mine and world.is_main:
            store.mark_incomplete()
        images = int(world.all_sum(fill(store, mine) if mine else 0))
        world.barrier()
        if world.is_main:
            bad = [str(i) for i, ok in zip(store.ids(), store.valid()) if not ok]
            seconds = round(time.perf_counter() - started, 3)
            store.finish(
                {"skipped": bad, "last_run": {"images": images, "seconds": seconds, "world_size": world.size}}
            )
        world.barrier()
        return Written(
            store.path,
            images,
            int(store.done_shards().sum()),
            store.n_shards,
            store.size_bytes(),
            list(store.attrs.get("skipped", [])),
        )
    finally:
        if lock is not None:
            lock.release()
