"""`python -m extract verify STORE`: prove a store is whole, or list what is wrong with it.

Checked: the store's identity and schema version; the completion flag and every shard's
done marker; every chunk of every array read back (the CRC32C codec raises on a corrupt
or truncated chunk); no NaN or inf in rows marked valid; labels, ids, index and valid of the
same length as every feature array; the attrs' array list matching the arrays present.
Reading is shard by shard, so memory stays at one shard of one array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from extract.store.location import StoreURL, exists, store_location
from extract.store.schema import FORMAT, SCHEMA_VERSION, FeatureKey, FeatureStore, StoreError


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    bad_shards: set[int] = field(default_factory=set)  # shards whose rows a re-extraction would fix
    repairable: bool = True  # False when a problem is not confined to shards (metadata, identity)


def verify_store(path: str | Path | StoreURL) -> list[str]:
    """Every problem found, one line each; an empty list means the store is whole."""
    return inspect_store(path).problems


def inspect_store(path: str | Path | StoreURL) -> Report:
    """What is wrong with a store (a folder or a URL: every chunk is read over the network)."""
    path = store_location(path)
    if not exists(path):
        return Report([f"{path}: does not exist"], repairable=False)
    try:
        store = FeatureStore.open(path)
    except (StoreError, ValueError) as e:
        return Report([_first_line(e)], repairable=False)
    report = Report()
    problems = report.problems
    attrs = store.attrs
    if attrs.get("format") != FORMAT or attrs.get("schema_version") != SCHEMA_VERSION:
        problems.append(
            f"format {attrs.get('format')!r} version {attrs.get('schema_version')!r}; "
            f"expected {FORMAT!r} {SCHEMA_VERSION}"
        )
        report.repairable = False
    n = store.n_rows
    try:
        done = store.group["progress/done"][:].astype(bool)
    except Exception as e:  # noqa: BLE001 - any unreadable marker is a finding
        done = np.zeros(store.n_shards, bool)
        problems.append(f"shard markers unreadable ({_first_line(e)})")
    missing = np.flatnonzero(~done)
    if missing.size:
        problems.append(f"{missing.size} of {store.n_shards} shards not written: {missing[:10].tolist()}")
        report.bad_shards.update(missing.tolist())
    if not attrs.get("complete"):
        problems.append("not marked complete")

    meta = {}
    for name in ("labels", "ids", "index", "valid"):
        try:
            meta[name] = getattr(store, name)()
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name}: unreadable ({_first_line(e)})")
            report.repairable = False
            continue
        if len(meta[name]) != n:
            problems.append(f"{name}: {len(meta[name])} rows, layout says {n}")
            report.repairable = False
    if "ids" in meta and len(set(meta["ids"].tolist())) != len(meta["ids"]):
        problems.append("ids: not unique")
        report.repairable = False
    valid = meta.get("valid", np.ones(n, bool))
    if len(valid) != n:
        valid = np.ones(n, bool)

    listed = [FeatureKey.from_dict(a) for a in attrs.get("arrays", [])]
    for key in listed:
        try:
            array = store.group[key.path]
        except Exception as e:  # noqa: BLE001
            problems.append(f"{key}: listed in attrs but missing ({_first_line(e)})")
            report.repairable = False
            continue
        if array.shape[0] != n:
            problems.append(f"{key}: {array.shape[0]} rows, layout says {n}")
            report.repairable = False
            continue
        bad_rows: list[int] = []
        for s in range(store.n_shards):
            rows = store.shard_rows(s)
            try:
                values = array[rows.start : rows.stop]
            except Exception as e:  # noqa: BLE001 - checksum and decode errors name the shard
                problems.append(
                    f"{key}: shard {s} (rows {rows.start}-{rows.stop - 1}) unreadable: {_first_line(e)}"
                )
                report.bad_shards.add(s)
                continue
            use = valid[rows.start : rows.stop]
            finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            nonfinite = np.flatnonzero(use & ~finite)
            if nonfinite.size:
                report.bad_shards.add(s)
            bad_rows += (nonfinite + rows.start).tolist()
        if bad_rows:
            problems.append(f"{key}: NaN or inf in {len(bad_rows)} valid rows, first {bad_rows[:5]}")
    return report
