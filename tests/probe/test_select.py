"""probe select: one run chosen among several on validation only, copied with its predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.select import select_run
from probe.tables import RESULTS_FORMAT, write_predictions


def fake_run(folder, name, val, test, predictions=True):
    result = {"format": RESULTS_FORMAT, "name": name, "val": {"top1": val}, "test": {"top1": test}}
    if predictions:
        result["predictions"] = write_predictions(
            folder / f"{name}.predictions.npz", [0, 1, 2], [1, 1, 1], [1, 0, int(test > 50)]
        )
    (folder / f"{name}.json").write_text(json.dumps(result))
    return folder / f"{name}.json"


def test_the_best_validation_run_is_copied_and_test_is_never_chosen_on(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    fake_run(runs, "lr1", 70.0, 99.0)
    fake_run(runs, "lr2", 80.0, 10.0)
    fake_run(runs, "lr3", 80.0, 20.0)  # a tie: the first of the equal ones
    chosen = select_run([runs / "lr*.json"], "ft", tmp_path / "out")
    assert chosen["selected_run"] == "lr2" and chosen["name"] == "ft" and chosen["test"]["top1"] == 10.0
    assert [r["name"] for r in chosen["selected_from"]] == ["lr1", "lr2", "lr3"]
    saved = json.loads((tmp_path / "out" / "ft.json").read_text())
    assert saved == chosen and saved["predictions"] == "ft.predictions.npz"
    with np.load(tmp_path / "out" / "ft.predictions.npz") as f, np.load(runs / "lr2.predictions.npz") as g:
        assert all(np.array_equal(f[k], g[k]) for k in ("index", "label", "pred"))


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: [fake_run(d, "a", 1.0, 1.0)], "at least two runs"),
        (lambda d: [fake_run(d, "a", 1.0, 1.0), fake_run(d, "b", None, 1.0)], "has no validation score"),
        (lambda d: [fake_run(d, "a", 1.0, 1.0), d / "missing.json"], "results file not found"),
        (lambda d: [d / "none*.json"], "no results file matches"),
    ],
)
def test_bad_input_is_one_line(tmp_path, setup, message):
    files = setup(tmp_path)
    done = CliRunner().invoke(
        cli,
        [
            "select",
            *[a for f in files for a in ("--results", str(f))],
            "--name",
            "x",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert (
        done.exit_code == 2
        and message in done.output
        and "Traceback" not in done.output
        and len(done.output.strip().splitlines()) == 1
    ), done.output


def test_the_command_says_what_it_chose(tmp_path):
    a, b = fake_run(tmp_path, "a", 60.0, 61.0), fake_run(tmp_path, "b", 65.0, 62.5)
    done = CliRunner().invoke(
        cli,
        ["select", "--results", str(a), "--results", str(b), "--name", "best", "--out", str(tmp_path / "o")],
    )
    assert done.exit_code == 0, done.output
    assert (
        done.output.strip()
        == f"{tmp_path / 'o' / 'best'}.json: b (validation top-1 of a 60.00, b 65.00); test top-1 62.50"
    )


def test_ties_go_to_the_first_or_the_last_in_natural_order(tmp_path):
    for step, val in [(4000, 87.5), (12000, 88.8), (16000, 89.22), (20000, 89.22)]:
        fake_run(tmp_path, f"step{step}", val, step / 1000)
    glob = [tmp_path / "step*.json"]
    assert select_run(glob, "first", tmp_path / "o")["selected_run"] == "step16000"
    last = select_run(glob, "last", tmp_path / "o", ties="last")
    assert last["selected_run"] == "step20000"  # by name, step4000 would sort last
    assert [r["name"] for r in last["selected_from"]] == ["step4000", "step12000", "step16000", "step20000"]
    done = CliRunner().invoke(
        cli,
        ["select", "--results", str(glob[0]), "--name", "x", "--out", str(tmp_path / "o"), "--ties", "last"],
    )
    assert done.exit_code == 0 and ": step20000 (" in done.output, done.output


def test_features_from_trains_where_another_run_chose_on_validation(tmp_path):
    from extract.store.schema import FeatureKey
    from probe.grid import TrainSettings
    from probe.run import ProbeConfig, probe
    from tests.probe.stores import make_store

    weak, strong = FeatureKey(10, 7, 2), FeatureKey(50, 9, None)
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x_weak = rng.normal(size=(300, 3, 2, 2)).astype(np.float16)  # no signal
    x_strong = (rng.normal(size=(300, 3, 2, 2)) + 4.0 * np.eye(3)[y][:, :, None, None]).astype(np.float16)
    make_store(tmp_path / "train.zarr", {weak: x_weak, strong: x_strong}, y)
    settings = TrainSettings(epochs=3, batch_size=32)
    linear = probe(
        ProbeConfig(
            train=tmp_path / "train.zarr",
            results=tmp_path / "r",
            progress=False,
            training=settings,
            name="linear",
        )
    )
    assert linear["head"]["feature_set"] == "t50/b9/full"  # two keys, chosen on validation
    attention = probe(
        ProbeConfig(
            train=tmp_path / "train.zarr",
            heads=("attention",),
            head_options=("width=16", "heads=2", "depth=1"),
            features_from=tmp_path / "r" / "linear.json",
            results=tmp_path / "r",
            progress=False,
            training=settings,
            name="attention",
        )
    )
    assert [m["feature_set"] for m in attention["members"]] == ["t50/b9/full"]
    assert attention["config"]["features_from"] == str(tmp_path / "r" / "linear.json")
    args = [
        "train",
        "--train",
        str(tmp_path / "train.zarr"),
        "--head",
        "attention",
        "--head-opt",
        "width=16",
        "--head-opt",
        "heads=2",
        "--head-opt",
        "token_side=1",
        "--features-from",
        str(tmp_path / "r" / "linear.json"),
        "--epochs",
        "1",
        "--results",
        str(tmp_path / "r"),
        "--name",
        "cli",
        "--no-progress",
    ]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "r" / "cli.json").read_text())["head"]["feature_set"] == "t50/b9/full"
    with pytest.raises(ValueError, match="either --features-from or --features"):
        probe(
            ProbeConfig(
                train=tmp_path / "train.zarr",
                features=("t10/b7/p2",),
                features_from=tmp_path / "r" / "linear.json",
                progress=False,
            )
        )


def test_features_from_refuses_a_run_that_chose_without_validation(tmp_path):
    from probe.select import chosen_features

    result = {
        "format": RESULTS_FORMAT,
        "name": "nov",
        "members": [{}, {}],
        "val": {"top1": None},
        "head": {"features": [{"t": 10, "b": 7, "pool": 2}]},
    }
    (tmp_path / "nov.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match="were not chosen on validation"):
        chosen_features(tmp_path / "nov.json")
    result["members"] = [{}]
    (tmp_path / "one.json").write_text(
        json.dumps(
            {**result, "head": {"features": [{"t": 10, "b": 7, "pool": 2}, {"t": 50, "b": 7, "pool": None}]}}
        )
    )
    assert chosen_features(tmp_path / "one.json") == "t10/b7/p2+t50/b7/full"
    with pytest.raises(FileNotFoundError, match="results file not found"):
        chosen_features(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text(json.dumps({**result, "head": {"features": [{"t": 10}]}}))
    with pytest.raises(ValueError, match="not a list of \\(t, b, pool\\) keys"):
        chosen_features(tmp_path / "bad.json")
