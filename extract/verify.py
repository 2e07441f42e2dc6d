"""`python -m extract verify STORE`: prove a store is whole, or list what is wrong with it.

Checked: the store's identity and schema version; the completion flag and every shard's
done marker; every chunk of every array read back (the CRC32C codec raises on a corrupt
or truncated chunk); no NaN or inf in rows marked valid; labels, ids, index and valid of the
same length as every feature array; the attrs' array list matching the arrays present.
Reading is shard by shard, so memory stays at one shard of one array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.schema import FORMAT, SCHEMA_VERSION, FeatureKey, FeatureStore, StoreError


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def verify_store(path: str | Path) -> list[str]:
    """Every problem found, one line each; an empty list means the store is whole."""
    path = Path(path)
    if not path.exists():
        return [f"{path}: does not exist"]
    try:
        store = FeatureStore.open(path)
    except (StoreError, ValueError) as e:
        return [_first_line(e)]
    problems: list[str] = []
    attrs = store.attrs
    if attrs.get("format") != FORMAT or attrs.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"format {attrs.get('format')!r} version {attrs.get('schema_version')!r}; expected {FORMAT!r} {SCHEMA_VERSION}")
    n = store.n_rows
    try:
        done = store.group["progress/done"][:].astype(bool)
    except Exception as e:  # noqa: BLE001 - any unreadable marker is a finding
        done = np.zeros(store.n_shards, bool)
        problems.append(f"shard markers unreadable ({_first_line(e)})")
    missing = np.flatnonzero(~done)
    if missing.size:
        problems.append(f"{missing.size} of {store.n_shards} shards not written: {missing[:10].tolist()}")
    if not attrs.get("complete"):
        problems.append("not marked complete")

    meta = {}
    for name in ("labels", "ids", "index", "valid"):
        try:
            meta[name] = getattr(store, name)()
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name}: unreadable ({_first_line(e)})")
            continue
        if len(meta[name]) != n:
            problems.append(f"{name}: {len(meta[name])} rows, layout says {n}")
    if "ids" in meta and len(set(meta["ids"].tolist())) != len(meta["ids"]):
        problems.append("ids: not unique")
    valid = meta.get("valid", np.ones(n, bool))
    if len(valid) != n:
        valid = np.ones(n, bool)

    listed = [FeatureKey.from_dict(a) for a in attrs.get("arrays", [])]
    for key in listed:
        try:
            array = store.group[key.path]
        except Exception as e:  # noqa: BLE001
            problems.append(f"{key}: listed in attrs but missing ({_first_line(e)})")
            continue
        if array.shape[0] != n:
            problems.append(f"{key}: {array.shape[0]} rows, layout says {n}")
            continue
        bad_rows: list[int] = []
        for s in range(store.n_shards):
            rows = store.shard_rows(s)
            try:
                values = array[rows.start : rows.stop]
            except Exception as e:  # noqa: BLE001 - checksum and decode errors name the shard
                problems.append(f"{key}: shard {s} (rows {rows.start}-{rows.stop - 1}) unreadable: {_first_line(e)}")
                continue
            use = valid[rows.start : rows.stop]
            finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            bad_rows += (np.flatnonzero(use & ~finite) + rows.start).tolist()
        if bad_rows:
            problems.append(f"{key}: NaN or inf in {len(bad_rows)} valid rows, first {bad_rows[:5]}")
    return problems
