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


# the flat names and their order as stores have always recorded an extraction's config
RECORDED = (
    "out shard_rows overwrite allow_mismatch progress data data_root split data_opts classes_file subset "
    "per_class limit order data_seed model model_flags ckpt random_init aug ts blocks pools block_pools "
    "views seed dtype store_dtype class_label prompt model_dir cond latents micro_batch skip_bad "
    "skip_small_maps batch_size workers device log_snr"
).split()


@pytest.mark.parametrize(
    "model,given,family",
    [
        ("tiny", {"model_flags": "", "class_label": 3}, "AdmOptions"),
        ("tiny-sd", {"prompt": "a cat", "model_dir": Path("m"), "latents": Path("l.zarr")}, "LatentOptions"),
        ("diffusers", {"model_dir": Path("m"), "cond": Path("c.safetensors")}, "DiffusersOptions"),
    ],
)
def test_a_familys_options_go_to_its_options_object_and_flat_names_every_one(model, given, family):
    from extract.store.config import ExtractConfig

    cfg = from_flat(ExtractConfig, out=Path("s.zarr"), model=model, **given)
    assert type(cfg.options).__name__ == family
    assert all(getattr(cfg.options, k) == v for k, v in given.items())
    record = flat(cfg)
    assert list(record) == RECORDED  # every family's options, in the order stores record them
    unset = {
        "model_flags": "",
        "class_label": None,
        "prompt": "",
        "model_dir": None,
        "cond": None,
        "latents": None,
    }
    assert {k: record[k] for k in unset} == {**unset, **given}  # the others' as stores record them unset
    assert from_flat(ExtractConfig, **record) == cfg


def test_another_familys_option_is_an_error_unless_it_is_unset():
    from extract.models.adm_options import AdmOptions
    from extract.models.latent_options import LatentOptions
    from extract.store.config import ExtractConfig

    with pytest.raises(
        ValueError, match="model tiny has no option prompt; its family's options: class_label"
    ):
        from_flat(ExtractConfig, out=Path("s.zarr"), model="tiny", prompt="a cat")
    # what a store records for a family without the option reads back
    assert (
        from_flat(ExtractConfig, out=Path("s.zarr"), model="tiny", prompt="", cond=None).options
        == AdmOptions()
    )
    with pytest.raises(ValueError, match="model tiny takes AdmOptions, not LatentOptions"):
        ExtractConfig(store=StoreOptions(out=Path("s.zarr")), model="tiny", options=LatentOptions())
    assert ExtractConfig(store=StoreOptions(out=Path("s.zarr")), model="tiny-dit").options == LatentOptions()
