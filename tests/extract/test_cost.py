"""What an extraction will cost, printed before it runs."""

from __future__ import annotations

import pytest

from extract.cli import main
from extract.cost import forward_gflop, plan, scaled
from extract.models.adm_presets import get_preset
from extract.store.config import DataSelection, ExtractConfig, StoreOptions


def config(tmp_path, **kw) -> ExtractConfig:
    sel = kw.pop("selection", DataSelection())
    return ExtractConfig(store=StoreOptions(out=tmp_path / "s.zarr"), selection=sel, **kw)


def test_imagenet_rows_come_from_the_registry_when_the_data_is_not_here(tmp_path):
    cfg = config(
        tmp_path,
        model="adm256-uncond",
        selection=DataSelection(data="imagenet", split="train"),
        ts=(150,),
        blocks=(24,),
        pools=(2,),
    )
    cost = plan(cfg, images_per_s=1000)
    assert (cost.rows, cost.rows_from, cost.values_per_row) == (1281167, "official", 1024 * 2 * 2)
    assert cost.bytes == 1281167 * 4096 * 2  # fp16
    # torch's flop counter, as measured for the full checkpoint
    assert cost.gflop_per_forward == pytest.approx(639.29, abs=0.01)
    assert cost.hours == pytest.approx(1281167 / 1000 / 3600)
    assert "10.50 GB" in cost.line() and "1,281,167 rows (official)" in cost.line()
    full = plan(
        config(
            tmp_path,
            model="adm256-uncond",
            selection=DataSelection(data="imagenet", split="train"),
            ts=(90, 150, 300),
            blocks=(19, 24, 30),
            pools=(None,),
            views=8,
        )
    )
    assert full.forwards == 1281167 * 3 * 8 and full.values_per_row == 3 * (
        1024 * 8 * 8 + 1024 * 16 * 16 + 512 * 64 * 64
    )


def test_flops_grow_with_the_deepest_block():
    preset = get_preset("adm256-uncond")
    assert forward_gflop(preset, 19) < forward_gflop(preset, 24) < forward_gflop(preset, 37)
    assert forward_gflop(preset, 19) == pytest.approx(580.3, abs=0.1)


def test_the_plan_reads_the_selection_when_the_data_is_here_and_writes_nothing(tmp_path, fmnist_env):
    cost = plan(
        config(
            tmp_path, selection=DataSelection(split="test", limit=20), blocks=(9,), pools=(None, 2), views=2
        )
    )
    assert (cost.rows, cost.rows_from, cost.views, cost.keys) == (20, "data", 2, 2)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "run",
                "--split",
                "test",
                "--limit",
                "20",
                "-b",
                "9",
                "--out",
                str(tmp_path / "p.zarr"),
                "--plan",
            ]
        )
    assert done.value.code in (0, None) and not (tmp_path / "p.zarr").exists()


def test_scaled_units():
    assert (
        scaled(1234567, "B") == "1.23 MB"
        and scaled(12, "B") == "12 B"
        and scaled(2.5e15, "FLOP") == "2.50 PFLOP"
    )
