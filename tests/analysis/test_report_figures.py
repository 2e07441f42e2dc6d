"""The report's figures at the page's width: a 37-block CKA map with legible labels, layers named
where a staged network's store names them, and a rerun listed once."""

from __future__ import annotations

import json
import struct

import numpy as np

from analysis.report import build_report
from analysis.report_figures import (
    DPI,
    LEGIBLE_PX,
    PAGE_PX,
    SCALE,
    block_cell,
    cka_figure,
    cka_figures,
    curves_figure,
    smallest_text_px,
)
from tests.analysis.test_report import _run


def _blocks_map(n=37, who="demo-fmnist", t=10, pool="p1") -> dict:
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, (n, n))
    labels = [f"{who} t{t}/b{b}/{pool}" for b in range(1, n + 1)]
    return {
        "rows": labels,
        "cols": labels,
        "cka": ((m + m.T) / 2).tolist(),
        "images": 500,
        "kernel": "linear",
        "sources": {who: {"model": f"{who} (0a25fa57c4c4)", "store": "/gone/s.zarr"}},
        "invocation": {"options": {"title": f"{who}: linear CKA between blocks, t={t}, global average pool"}},
    }


def _png_width(png: bytes) -> int:
    return struct.unpack(">I", png[16:20])[0]


def test_a_37_block_map_fits_the_page_with_legible_short_labels(tmp_path):
    fig = cka_figure(_blocks_map(), "blocks")
    assert fig.get_figwidth() * DPI <= PAGE_PX  # shown at its own size, never scaled down
    assert smallest_text_px(fig) >= LEGIBLE_PX
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"b{b}" for b in range(1, 38)]
    assert ax.get_ylabel() == "demo-fmnist, t=10, pool p1" and ax.title.get_fontsize() * DPI / 72 >= 15
    (tmp_path / "blocks.json").write_text(json.dumps(_blocks_map()))
    (drawn,) = cka_figures([tmp_path])
    assert drawn.width <= PAGE_PX and _png_width(drawn.png) == drawn.width * SCALE


def test_a_map_over_timesteps_keeps_only_t_in_its_ticks():
    meta = _blocks_map()
    meta["rows"] = meta["cols"] = [f"m t{t}/b30/full" for t in (10, 25, 50)]
    meta["cka"] = np.eye(3).tolist()
    ax = cka_figure(meta, "ts").axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["t10", "t25", "t50"]
    assert ax.get_xlabel() == "m, block 30, pool full"


def test_blocks_of_a_staged_network_are_named_by_their_layer():
    layers = {"1": "conv stage 1", "4": "embedding", "5": "logits"}
    assert block_cell(layers, "4") == "4: embedding" and block_cell({}, "4") == "4"
    members = [
        {"features": [{"t": 0, "b": b, "pool": 1}], "val": {"top1": 50.0 + b}, "test": {"top1": 40.0 + b}}
        for b in (1, 4, 5)
    ]
    fig, fixed = curves_figure("clf", members, layers)
    assert fixed == "t=0, pool=1" and len(fig.axes) == 1  # t and pool hold one value: no panel
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["conv stage 1", "embedding", "logits"]
    assert fig.get_figwidth() * DPI <= PAGE_PX and smallest_text_px(fig) >= LEGIBLE_PX


def test_a_table_with_a_rerun_appended_twice_lists_the_run_once(tmp_path):
    _run(tmp_path)
    table = tmp_path / "results" / "demo" / "probe_results.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, lines[1]]) + "\n")  # an old table: the rerun appended
    md, _, _ = build_report([tmp_path / "results"], [], tmp_path / "rep", "t", generation=None)
    assert md.read_text().count("| run1 | linear |") == 1


def test_an_old_run_without_the_edge_column_gets_its_edge_from_its_results_file():
    from analysis.report import _edges

    members = [
        {"head": "linear", "feature_set": "f", "lr": lr, "val": {"top1": v}}
        for lr, v in ((1e-3, 80), (1e-2, 90))
    ]
    assert _edges({"members": members, "selected": 1}) == "lr high"
    assert _edges({"members": members, "selected": 0}) == "lr low" and _edges({}) == ""
