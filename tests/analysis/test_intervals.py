"""Paired-bootstrap differences between probe runs: the numerics against a plain loop, the
predictions file that `probe train` writes, loading and alignment errors, `analysis diff`, and
the report's Differences section."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.cli import cli
from analysis.intervals import compare, configuration, load_run, paired_bootstrap
from analysis.report import build_report
from extract.store.schema import FeatureKey
from probe.grid import TrainSettings
from probe.run import ProbeConfig, probe
from tests.probe.stores import blobs, make_store

KEY = FeatureKey(10, 3, 2)


def _reference(a, b, resamples, seed):
    """The bootstrap as written in a textbook: per resample, each run's accuracy on the drawn rows."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        acc_a = [100.0 * sum(bool(run[i]) for i in idx) / n for run in a]
        acc_b = [100.0 * sum(bool(run[i]) for i in idx) / n for run in b]
        stats.append(sum(acc_a) / len(acc_a) - sum(acc_b) / len(acc_b))
    stats.sort()

    def percentile(q):
        pos = q / 100 * (len(stats) - 1)
        lo = math.floor(pos)
        return stats[lo] + (pos - lo) * (stats[min(lo + 1, len(stats) - 1)] - stats[lo])

    return percentile(2.5), percentile(97.5)


def test_the_bootstrap_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 80)) < 0.8, rng.random((2, 80)) < 0.7
    d = paired_bootstrap(a, b, resamples=300, seed=5)
    low, high = _reference(a, b, 300, 5)
    assert d.low == pytest.approx(low, abs=1e-9) and d.high == pytest.approx(high, abs=1e-9)
    runs_a = [100.0 * r.mean() for r in a]
    runs_b = [100.0 * r.mean() for r in b]
    assert d.a_runs == pytest.approx(runs_a) and d.b_runs == pytest.approx(runs_b)
    assert d.points == pytest.approx(statistics.mean(runs_a) - statistics.mean(runs_b))
    assert d.a_std == pytest.approx(statistics.stdev(runs_a)) and d.b_std == pytest.approx(
        statistics.stdev(runs_b)
    )
    assert d.rows == 80 and d.resamples == 300 and d.low <= d.points <= d.high


def test_identical_sides_give_zero_a_known_shift_is_covered_and_a_seed_fixes_the_result():
    rng = np.random.default_rng(0)
    a = rng.random((2, 500)) < 0.85
    same = paired_bootstrap(a, a.copy(), resamples=200)
    assert same.points == 0 and same.low == 0 and same.high == 0
    b = a.copy()
    right = np.flatnonzero(a.all(axis=0))[
        :50
    ]  # 50 rows both A runs get right, B gets wrong: exactly 10 points
    b[:, right] = False
    shifted = paired_bootstrap(a, b, resamples=500)
    assert shifted.points == pytest.approx(10.0) and shifted.low < 10.0 < shifted.high
    independent = paired_bootstrap(
        rng.random(2000) < 0.9, rng.random(2000) < 0.8, resamples=500
    )  # true difference 10 points
    assert independent.low < 10.0 < independent.high and independent.a_std == 0.0
    assert paired_bootstrap(a, b, resamples=500, seed=7) == paired_bootstrap(a, b, resamples=500, seed=7)
    assert (
        paired_bootstrap(a, b, resamples=500, seed=7).low != paired_bootstrap(a, b, resamples=500, seed=8).low
    )


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="different numbers of test rows"):
        paired_bootstrap(np.ones((1, 5), bool), np.ones((1, 6), bool))
    with pytest.raises(ValueError, match="expected \\(runs, rows\\)"):
        paired_bootstrap(np.ones((1, 0), bool), np.ones((1, 0), bool))


def test_seed_suffixes_name_one_configuration():
    assert (
        configuration("demo-trained-s1")
        == "demo-trained"
        == configuration("demo-trained-seed12")
        == configuration("demo-trained")
    )
    assert (
        configuration("linear_s3") == "linear"
        and configuration("mlp-s") == "mlp-s"
        and configuration("t-s150x") == "t-s150x"
    )


@pytest.mark.slow
def test_the_module_loads_no_torch():
    code = "import sys, analysis.intervals; print('torch' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny probe runs in one results folder: two seeds of a linear head, a kNN baseline, one on
    fewer test rows, one on another split, and one whose predictions file is gone."""
    root = tmp_path_factory.mktemp("runs")
    x, y, c = blobs(160, 4, 16, seed=0, shape=(4, 2, 2))
    make_store(root / "tr.zarr", {KEY: x}, y)
    xt, yt, _ = blobs(72, 4, 16, seed=1, shape=(4, 2, 2), centres=c, spread=2.5)
    valid = np.ones(72, bool)
    valid[[3, 40]] = False
    make_store(root / "te.zarr", {KEY: xt}, yt, split="test", valid=valid)
    make_store(
        root / "te-short.zarr", {KEY: xt}, yt, split="test", valid=np.arange(72) < 50
    )  # other rows of the same data
    make_store(root / "other.zarr", {KEY: xt}, yt, split="val")
    results = root / "results"

    def run(name, test="te.zarr", seed=0, head="linear"):
        return probe(
            ProbeConfig(
                train=root / "tr.zarr",
                test=root / test,
                results=results,
                heads=(head,),
                progress=False,
                name=name,
                training=TrainSettings(epochs=2, batch_size=32, seed=seed),
            )
        )

    out = {
        "cfg-s0": run("cfg-s0"),
        "cfg-s1": run("cfg-s1", seed=1),
        "knn": run("knn", head="knn"),
        "short": run("short", test="te-short.zarr"),
        "split": run("split", test="other.zarr"),
        "old": run("old"),
    }
    old = results / "old.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k != "predictions"}))
    (results / "old.predictions.npz").unlink()
    return results, out, yt, valid


def test_probe_writes_the_selected_members_test_predictions(runs):
    results, out, yt, valid = runs
    for name in ("cfg-s0", "knn"):
        assert out[name]["predictions"] == f"{name}.predictions.npz"
        assert json.loads((results / f"{name}.json").read_text())["predictions"] == f"{name}.predictions.npz"
        with np.load(results / f"{name}.predictions.npz") as f:
            assert np.array_equal(f["index"], np.flatnonzero(valid)) and np.array_equal(
                f["label"], yt[valid]
            )  # scored rows only, by dataset position
            assert 100.0 * float((f["pred"] == f["label"]).mean()) == pytest.approx(out[name]["test"]["top1"])


def test_loading_aligns_rows_and_refuses_mismatches_in_one_line(runs):
    results = runs[0]
    d = compare([f"{results}/cfg-s0.json,{results}/cfg-s1.json"], [results / "knn.json"], resamples=200)
    assert d.a == "cfg" and d.b == "knn" and d.rows == 70 and len(d.a_runs) == 2
    assert d == compare([f"{results}/cfg-s*.json"], [results / "knn.json"], resamples=200)  # a glob, sorted
    assert load_run(results / "cfg-s0.json").correct.shape == (70,)
    for other, message in (
        ("short", "different test rows"),
        ("split", "different datasets"),
        ("old", "no per-row test predictions"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
            compare([results / "cfg-s0.json"], [results / f"{other}.json"], resamples=10)
        assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no results file matches"):
        compare([f"{results}/nothing*.json"], [results / "knn.json"])


def test_the_diff_command_prints_the_interval_and_refuses_bad_input(runs, tmp_path):
    results = runs[0]
    out = tmp_path / "diff.json"
    done = CliRunner().invoke(
        cli,
        [
            "diff",
            "--a",
            f"{results}/cfg-s0.json",
            "--a",
            f"{results}/cfg-s1.json",
            "--b",
            str(results / "knn.json"),
            "--resamples",
            "300",
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    line = done.output.strip()
    assert re.fullmatch(
        r"cfg - knn: [+-]\d+\.\d\d points, 95% interval \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] "
        r"\(paired bootstrap over 70 test images, "
        r"300 resamples; A: 2 runs, mean \d+\.\d\d \+- \d+\.\d\d; B: 1 run, \d+\.\d\d\)",
        line,
    ), line
    saved = json.loads(out.read_text())
    assert (
        saved["resamples"] == 300
        and saved["invocation"]["command"].endswith("diff")
        and f"{saved['points']:+.2f}" in line
    )
    for other, message in (("short", "different test rows"), ("old", "no per-row test predictions")):
        bad = CliRunner().invoke(
            cli, ["diff", "--a", str(results / "cfg-s0.json"), "--b", str(results / f"{other}.json")]
        )
        assert (
            bad.exit_code == 2
            and message in bad.output
            and "Traceback" not in bad.output
            and len(bad.output.strip().splitlines()) == 1
        )


def test_the_report_has_a_differences_section_in_both_outputs(runs, tmp_path):
    results = runs[0]
    md, page, _ = build_report(
        [results], [tmp_path / "nocka"], tmp_path / "rep", generation=None, resamples=300
    )
    text, html_text = md.read_text(), page.read_text()
    d = compare([results / "cfg-s0.json", results / "cfg-s1.json"], [results / "knn.json"], resamples=300)
    row = (
        f"| cfg | knn | {d.points:+.2f} | {d.interval()} | 70 | 2 runs, mean {d.a_mean:.2f} +- {d.a_std:.2f} "
        f"| 1 run, {d.b_mean:.2f} |"
    )
    assert "## Differences" in text and row in text and "300 resamples" in text
    assert "<h2>Differences</h2>" in html_text and f"<td>{d.interval()}</td>" in html_text
    for name, why in (
        ("short", "different test rows"),
        ("split", "different datasets"),
        ("old", "no per-row test predictions"),
    ):
        assert re.search(rf"- {name} skipped: .*{why}", text), name
        assert re.search(rf"<li>{name} skipped: [^<]*{why}", html_text), name
