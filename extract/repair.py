"""Repair: re-extract a store's bad shards with the arguments it was made with.

`extract.store.verify` finds the problems (it reads, and imports no stage); repairing runs
the store kind's own extraction again, so it lives with the extraction stage.
"""

from __future__ import annotations

from pathlib import Path

from extract.models.families import family_of_kind
from extract.store.config import flat, from_flat
from extract.store.schema import FeatureStore, StoreError
from extract.store.verify import inspect_store, verify_store


def _rebuild_config(cls, recorded: dict, **overrides):
    """The config a store was made with, from its JSON provenance (flat names; lists back to tuples)."""
    names = set(flat(from_flat(cls, out=Path("."))))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in names}
    values.update({k: v for k, v in overrides.items() if k in names})
    return from_flat(cls, **values)


def repair_store(path: str | Path, ckpt: Path | None = None, data_root: Path | None = None) -> list[str]:
    """Re-extract the bad shards of a store with the arguments it was made with (from its
    provenance; any store kind the one writer makes), then verify again. Returns the
    problems left (empty: repaired)."""
    report = inspect_store(path)
    if not report.problems:
        return []
    if not report.repairable:
        raise StoreError(f"{path}: cannot repair, a problem is not confined to shards: {report.problems[0]}")
    store = FeatureStore.open(path, mode="r+")
    provenance = store.attrs.get("provenance", {})
    config = dict(provenance.get("config", {}))
    # stores made before kinds were recorded are U-Net stores
    kind = provenance.get("kind") or ("unet" if "ts" in config else None)
    family = family_of_kind(kind)
    if not config or provenance.get("stage") != "extract" or family is None:
        raise StoreError(f"{path}: cannot repair: it holds no extraction configuration to re-extract with")
    for s in sorted(report.bad_shards):
        store.group["progress/done"][s] = 0
    store.mark_incomplete()
    overrides = {"out": path, "overwrite": False, "progress": False}  # a folder or a URL
    if ckpt is not None:
        # the config's own name for its weights file is kept, the other dropped
        overrides.update(ckpt=ckpt, weights=ckpt)
    if data_root is not None:
        overrides["data_root"] = data_root
    family.part("run")(_rebuild_config(family.part("config"), config, **overrides))
    return verify_store(path)
