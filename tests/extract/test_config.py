"""Configs are made of shared parts; the flat form (what stores record and the CLI passes)
round-trips, and an unknown option is an error."""

from pathlib import Path

import pytest

from extract.store.config import DataSelection, StoreOptions, flat, from_flat


def configs():
    from extract.models.backbones import BackboneConfig
    from extract.models.pixels import PixelConfig
    from extract.store.config import ExtractConfig

    return ExtractConfig, PixelConfig, BackboneConfig


@pytest.mark.parametrize("index", range(3))
def test_every_writer_config_holds_the_same_parts_and_round_trips(index):
    cls = configs()[index]
    cfg = from_flat(cls, out=Path("s.zarr"), split="test", limit=7, shard_rows=64, seed=3)
    assert isinstance(cfg.selection, DataSelection) and isinstance(cfg.store, StoreOptions)
    assert cfg.selection.limit == 7 and cfg.store.shard_rows == 64 and cfg.seed == 3
    assert from_flat(cls, **flat(cfg)) == cfg
    assert {"data", "split", "limit", "out", "shard_rows", "overwrite"} <= set(flat(cfg))


def test_an_unknown_option_is_an_error_never_ignored():
    with pytest.raises(TypeError, match="has no option colour"):
        from_flat(configs()[0], out=Path("s.zarr"), colour="red")


def test_part_defaults_come_from_the_config():
    backbone = from_flat(configs()[2], out=Path("s.zarr"))
    assert (
        backbone.selection.split == "test"
        and from_flat(configs()[1], out=Path("s.zarr")).selection.split == "train"
    )
