"""Accuracy curves pick each point by validation, never by test."""

from __future__ import annotations

import pytest

from analysis.curves import best_per_value, plot_curves


def member(t, b, pool, val, test):
    return {"features": [{"t": t, "b": b, "pool": pool}], "val": {"top1": val}, "test": {"top1": test}}


MEMBERS = [
    member(10, 7, 2, val=80, test=70),
    member(10, 9, 2, val=75, test=95),  # best on test, worse on validation: never the t=10 point
    member(50, 7, None, val=60, test=60),
    {
        "features": [{"t": 10, "b": 7, "pool": 2}, {"t": 50, "b": 7, "pool": 2}],
        "val": {"top1": 99},
        "test": {"top1": 99},
    },
]


def test_each_point_is_the_validation_best_member_with_that_value():
    by_t = best_per_value(MEMBERS, "t")
    assert list(by_t) == [10, 50] and by_t[10]["test"]["top1"] == 70
    by_pool = best_per_value(MEMBERS, "pool")
    assert list(by_pool) == [2, "full"]  # the concatenated member spans two t but one pool
    assert by_pool[2]["val"]["top1"] == 99


def test_bad_axis_and_empty_members_are_clear_errors():
    with pytest.raises(ValueError, match="axis must be one of t, b, pool"):
        best_per_value(MEMBERS, "lr")
    with pytest.raises(ValueError, match="no grid member has a single t value"):
        best_per_value([], "t")


def test_plot_has_one_panel_per_axis_with_a_line_per_run():
    fig = plot_curves({"trained": MEMBERS[:3], "random": MEMBERS[:3]}, "title", "store.zarr")
    assert len(fig.axes) == 3 and all(len(ax.lines) == 2 for ax in fig.axes)


def test_table_rows_become_one_line_per_model_and_weights():
    from analysis.curves import members_from_table

    rows = [
        {
            "model": "m",
            "weights": "w",
            "t": "10",
            "b": "7",
            "pool": "2",
            "val_top1": "80.00",
            "test_top1": "79.00",
        },
        {
            "model": "m",
            "weights": "w",
            "t": "50",
            "b": "7",
            "pool": "full",
            "val_top1": "70.00",
            "test_top1": "69.00",
        },
        {
            "model": "m",
            "weights": "random-init",
            "t": "10",
            "b": "7",
            "pool": "2",
            "val_top1": "60.00",
            "test_top1": "61.00",
        },
        {
            "model": "m",
            "weights": "w",
            "t": "10+50",
            "b": "7+7",
            "pool": "2+2",
            "val_top1": "99.00",
            "test_top1": "99.00",
        },
    ]
    runs = members_from_table(rows)
    assert sorted(runs) == ["m (random-init)", "m (w)"] and len(runs["m (w)"]) == 2
    assert list(best_per_value(runs["m (w)"], "pool")) == [2, "full"]
    with pytest.raises(ValueError, match="no rows with a single"):
        members_from_table(rows[3:])


def test_best_command_prints_the_validation_best_per_value_and_writes_every_member(tmp_path, capsys):
    import csv
    import json

    from analysis.cli import main

    members = [
        {
            **m,
            "head": "linear",
            "feature_set": "+".join(f"t{f['t']}/b{f['b']}/p{f['pool']}" for f in m["features"]),
            "lr": 0.01,
        }
        for m in MEMBERS
    ]
    (tmp_path / "r.json").write_text(json.dumps({"format": "diffprobe-probe-results", "members": members}))
    with pytest.raises(SystemExit) as done:
        main(
            [
                "best",
                "--results",
                f"demo={tmp_path / 'r.json'}",
                "--by",
                "t",
                "--csv",
                str(tmp_path / "m.csv"),
            ]
        )
    assert done.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:3]] == [["demo", "10"], ["demo", "50"]]
    assert out[1].split()[-1] == "70.00"  # the validation-best at t=10, not the test-best (95)
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 4 and rows[1]["test_top1"] == "95" and rows[3]["t"] == "10+50"


def test_best_command_refuses_a_file_that_is_not_a_results_file(tmp_path, capsys):
    from analysis.cli import main

    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(SystemExit) as done:
        main(["best", "--results", f"a={tmp_path / 'x.json'}"])
    assert done.value.code == 2 and "not a probe results file" in capsys.readouterr().err


def test_the_t_panel_can_put_each_runs_log_snr_on_x(tmp_path):
    """Two runs of models with different schedules: their t panel lines up by noise level, read
    from each run's training store's key."""
    import json

    import numpy as np

    from analysis.cli import main
    from extract.store.schema import FeatureKey, FeatureStore
    from tests.probe.stores import make_store

    members = [member(10, 1, 1, 80, 79), member(50, 1, 1, 82, 81)]
    args = []
    for label, levels in (("a", {"10": 6.1, "50": 3.0}), ("b", {"10": 4.0, "50": 1.0})):
        store = tmp_path / f"{label}.zarr"
        make_store(store, {FeatureKey(10, 1, 1): np.zeros((4, 2, 1, 1), np.float16)}, np.arange(4) % 2)
        s = FeatureStore.open(store, mode="r+")
        s.group.attrs["key"] = dict(s.attrs["key"]) | {
            "noise_levels": {t: {"log_snr": v} for t, v in levels.items()}
        }
        results = tmp_path / f"{label}.json"
        results.write_text(
            json.dumps(
                {
                    "format": "diffprobe-probe-results",
                    "members": members,
                    "stores": {"train": {"path": str(store)}},
                }
            )
        )
        args += ["--results", f"{label}={results}"]
    fig = plot_curves({"a": members}, "x", "s", {"a": {10: 6.1, 50: 3.0}})
    assert list(fig.axes[0].lines[0].get_xdata()) == [6.1, 3.0] and "log-SNR" in fig.axes[0].get_xlabel()
    with pytest.raises(SystemExit) as done:
        main(["curves", *args, "--t-axis", "log-snr", "--out", str(tmp_path / "c.png")])
    assert done.value.code in (0, None) and (tmp_path / "c.png").stat().st_size > 0
