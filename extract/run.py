"""The extraction run: one entry for every model family.

`extract(config)` finds the preset's family in the registry (`extract.models.families`) and
runs it: check every argument before any work, build or load the model, create or resume the
store, then for each of this rank's unwritten shards run the shard loop (`extract.shards`)
with the family's forward and write the pooled features.
"""

from __future__ import annotations

from extract.models.families import family_functions
from extract.shards import Summary
from extract.store.config import ExtractConfig


def validate(cfg: ExtractConfig):
    """Every argument error for the preset's family, before any model, data or store is
    touched: (preset, sorted blocks, each key's row shape)."""
    check, _ = family_functions(cfg.model)
    return check(cfg)


def extract(cfg: ExtractConfig) -> Summary:
    """Run (or resume) one extraction into cfg.store.out. Collective under torchrun."""
    _, run = family_functions(cfg.model)
    return run(cfg)
