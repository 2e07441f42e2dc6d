"""The one place stores are named: a feature store from its extraction's config, a pixel store
from its data, and whether a store an experiment needs is already made."""

from __future__ import annotations

from pathlib import Path

from extract.store.config import ExtractConfig
from extract.store.location import Location, exists, store_location


def tag(values) -> str:
    """(10, 50) -> '10-50'; a pool of None (the whole map) is 'full'."""
    return "-".join("full" if v is None else str(v).replace(" ", "") for v in values)


def store_name(cfg: ExtractConfig) -> str:
    """<model>[-random]_<data>_<split>_t<T>_b<B>_p<POOL>[_n<LIMIT>][_bp<BLOCK-POOLS>][_v<K>-<AUG>]
    [_<DTYPE>][_<ORDER>][_s<SEED>].zarr, the bracketed parts only when they differ from no
    subset, no block's own pools, one view without augmentation, fp32, dataset order and seed 0."""
    sel = cfg.selection
    name = f"{cfg.model}{'-random' if cfg.random_init else ''}_{sel.data}_{sel.split}"
    name += f"_t{tag(cfg.ts)}_b{tag(cfg.blocks)}_p{tag(cfg.pools)}"
    name += f"_n{sel.limit}" if sel.limit else ""
    if cfg.block_pools:
        name += "_bp" + tag(p.replace(":", "-").replace(",", "-") for p in cfg.block_pools)
    if cfg.views != 1 or cfg.aug != "none":
        name += f"_v{cfg.views}-{cfg.aug}"
    name += "" if cfg.dtype == "fp32" else f"_{cfg.dtype}"
    name += "" if sel.order == "sorted" else f"_{sel.order}"
    name += "" if cfg.seed == 0 else f"_s{cfg.seed}"
    return name + ".zarr"


def store_path(folder: Location, cfg: ExtractConfig) -> Location:
    return store_location(folder) / store_name(cfg)


def pixel_path(folder: Location, data: str, split: str, limit: int | None) -> Location:
    """The raw-pixel baseline's store: <folder>/pixels_<data>_<split>[_n<LIMIT>].zarr."""
    return store_location(folder) / f"pixels_{data}_{split}{f'_n{limit}' if limit else ''}.zarr"


def made(path: Path) -> bool:
    """Whether a step's output is there: a feature store (.zarr) only once its extraction finished,
    so a killed extraction is resumed by its step instead of skipped; anything else when it exists."""
    path = store_location(path)
    if not path.name.endswith(".zarr") or not exists(path):
        return exists(path)
    from extract.store.schema import FeatureStore

    try:
        return FeatureStore.open(path).complete
    except Exception:  # noqa: BLE001 - an unreadable (torn) store is not made; its step says what is wrong
        return False


def bigan_path(folder: Location, data: str, split: str, limit: int | None) -> Location:
    """The BiGAN encoder's store: <folder>/bigan_<data>_<split>[_n<LIMIT>].zarr."""
    return store_location(folder) / f"bigan_{data}_{split}{f'_n{limit}' if limit else ''}.zarr"
