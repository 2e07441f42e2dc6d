"""Grids that do not stop at their edge; a rerun's row replaces its own in the results table."""

from __future__ import annotations

import csv
import math
import threading

import pytest

from probe.edges import edge_note, extend, find_edges
from probe.outputs import select
from probe.run import ProbeConfig, probe
from probe.tables import TABLE_COLUMNS, put_row, read_table, summary_lines
from probe.config import TrainSettings

PEAK = 0.05  # validation peaks at this lr, above the grid's top (1e-2)


def val_at(lr: float) -> float:
    """Validation top-1 rising monotonically in lr up to PEAK, falling beyond it."""
    return 90.0 - 5.0 * (math.log10(lr) - math.log10(PEAK)) ** 2


def member(lr: float, wd: float = 0.0) -> dict:
    return {
        "head": "linear",
        "options": {},
        "feature_set": "t10/b7/p2",
        "lr": lr,
        "wd": wd,
        "val": {"top1": val_at(lr)},
    }


def score_more(chosen: dict, grid: dict) -> list[dict]:
    return [member(lr, wd) for lr in grid["lr"] for wd in grid["wd"]]


def choose(members: list[dict]) -> int:
    return select(members, True)


GRID = [member(lr) for lr in (1e-3, 3e-3, 1e-2)]


def test_a_choice_on_the_top_of_its_grid_is_flagged_with_the_next_step_at_the_grids_ratio():
    edges = find_edges(GRID, choose(GRID))
    assert [str(e) for e in edges] == ["lr high"]
    assert edges[0].value == 1e-2 and edges[0].next == pytest.approx(3.33e-2)
    low = [member(lr, 0.0) for lr in (1e-3, 3e-3)]
    low[0]["val"]["top1"] = 99.0
    assert [(str(e), e.next) for e in find_edges(low, 0)] == [("lr low", pytest.approx(3.33e-4))]


def test_extension_steps_past_the_edge_until_the_peak_is_inside():
    members, record = extend(GRID, choose, score_more, limit=5)
    lrs = [m["lr"] for m in members]
    assert lrs == [1e-3, 3e-3, 1e-2, pytest.approx(3.33e-2), pytest.approx(0.111)]
    chosen = members[choose(members)]
    assert chosen["lr"] == pytest.approx(3.33e-2) and not find_edges(members, choose(members))
    assert record["stopped"] == "inside" and len(record["steps"]) == 2
    assert edge_note([], record) == "inside its grid after 2 extension step(s) past the edge"


def test_a_limit_stops_the_extension_and_says_the_choice_is_still_on_the_edge():
    members, record = extend(GRID, choose, score_more, limit=1)
    assert len(members) == 4 and record == {
        "limit": 1,
        "steps": [{"from": {"lr": 1e-2}, "added": [{"edge": "lr high", "value": 0.0333, "members": 1}]}],
        "stopped": "limit",
    }
    edges = [str(e) for e in find_edges(members, choose(members))]
    assert edges == ["lr high"]
    assert "still there after 1 extension step(s), the limit" in edge_note(edges, record)
    assert "--extend-edges N" in edge_note(edges, None)


def test_zero_is_no_low_edge_and_a_step_from_zero_has_no_ratio():
    grid = [member(1e-2, wd) for wd in (0.0, 0.05)]
    grid[1]["lr"] = 3e-3  # lr alone per member: the lr grid is (3e-3, 1e-2), chosen at 1e-2
    assert [str(e) for e in find_edges(grid, 0)] == ["lr high"]
    wd_high = [member(1e-2, wd) for wd in (0.0, 0.05)]
    wd_high[1]["val"]["top1"] += 1
    edges = find_edges(wd_high, choose(wd_high))
    assert [(str(e), e.next) for e in edges] == [("wd high", None)]
    members, record = extend(wd_high, choose, score_more, limit=3)
    assert len(members) == 2 and record["stopped"] == "no ratio"
    assert "gives no ratio" in edge_note(["wd high"], record)


def test_a_single_value_is_no_grid_and_members_of_other_heads_do_not_count():
    other = {**member(1e-1), "head": "mlp"}
    assert find_edges([member(1e-2), other], 0) == []


def test_a_rerun_replaces_its_own_row_and_keeps_the_others(tmp_path):
    table = tmp_path / "probe_results.csv"
    with open(table, "w", newline="") as f:  # a table written before the edge column existed
        old = [c for c in TABLE_COLUMNS if c != "edge"]
        writer = csv.DictWriter(f, fieldnames=old)
        writer.writeheader()
        writer.writerow({"name": "kept", "results": "kept.json", "test_top1": "70.00"})
        writer.writerow({"name": "run", "results": "run.json", "test_top1": "80.00"})
    put_row(table, {"name": "run", "results": "run.json", "test_top1": "81.00", "edge": "lr high"})
    rows = read_table(table)
    assert [(r["name"], r["test_top1"], r["edge"]) for r in rows] == [
        ("kept", "70.00", ""),
        ("run", "81.00", "lr high"),
    ]
    put_row(table, {"name": "other", "results": "other.json"})
    assert [r["name"] for r in read_table(table)] == ["kept", "run", "other"]


def test_runs_finishing_at_once_keep_every_row_and_leave_no_lock_file(tmp_path):
    table = tmp_path / "probe_results.csv"

    def write(k: int) -> None:
        for i in range(15):
            put_row(table, {"name": f"w{k}-{i}", "results": f"w{k}-{i}.json"})

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_table(table)) == 60 and sorted(p.name for p in tmp_path.iterdir()) == [
        "probe_results.csv"
    ]


def test_probe_extends_its_lr_grid_past_the_chosen_edge_and_reruns_keep_one_row(stores):
    cfg = ProbeConfig(
        train=stores / "train.zarr",
        test=stores / "test.zarr",
        results=stores / "results",
        progress=False,
        lrs=(1e-5, 1e-4),
        wds=(0.0,),
        extend_edges=1,
        training=TrainSettings(epochs=2, batch_size=32),
    )
    result = probe(cfg)
    lrs = [m["lr"] for m in result["members"]]
    # two lrs: the choice is on an edge, so one step is taken, up (1e-3) or down (1e-6)
    assert lrs[:2] == [1e-5, 1e-4] and len(lrs) == 3 and lrs[2] in (pytest.approx(1e-3), pytest.approx(1e-6))
    assert result["extend_edges"]["limit"] == 1 and len(result["extend_edges"]["steps"]) == 1
    assert result["edges"] == [str(e) for e in find_edges(result["members"], result["selected"])]
    rows = read_table(stores / "results" / "probe_results.csv")
    assert len(rows) == 1 and rows[0]["edge"] == ", ".join(result["edges"])
    assert (result["edges"] != []) == ("edge: " in summary_lines(result))
    probe(cfg)  # the same run again: its row is replaced, not added
    assert len(read_table(stores / "results" / "probe_results.csv")) == 1


def test_extending_edges_needs_validation(stores):
    cfg = ProbeConfig(train=stores / "train.zarr", val_fraction=0.0, extend_edges=2, progress=False)
    with pytest.raises(ValueError, match="chooses on validation"):
        probe(cfg)
