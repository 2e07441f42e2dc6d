"""The table over seeds (`analysis table`): each cell's mean and spread against the runs' own
results, the differences against `analysis diff`, cells not run, Fréchet distances, and one-line
errors."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.cli import cli
from analysis.intervals import compare
from analysis.seed_table import build_table, markdown, parse_rows
from extract.store.schema import FeatureKey
from probe.grid import TrainSettings
from probe.run import ProbeConfig, probe
from tests.probe.stores import blobs, make_store

KEYS = (FeatureKey(10, 3, 2), FeatureKey(10, 4, 2))


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory):
    """Two representations (a clean and a noisier key of one store) x two heads x seeds."""
    root = tmp_path_factory.mktemp("table")
    x, y, c = blobs(160, 4, 16, seed=0, shape=(4, 2, 2))
    noisy = x + np.random.default_rng(5).normal(0, 3, x.shape).astype(x.dtype)
    make_store(root / "tr.zarr", {KEYS[0]: x, KEYS[1]: noisy}, y)
    xt, yt, _ = blobs(72, 4, 16, seed=1, shape=(4, 2, 2), centres=c, spread=2.5)
    make_store(
        root / "te.zarr",
        {KEYS[0]: xt, KEYS[1]: xt + np.random.default_rng(6).normal(0, 3, xt.shape).astype(xt.dtype)},
        yt,
        split="test",
    )
    make_store(root / "short.zarr", {KEYS[0]: xt[:50], KEYS[1]: xt[:50]}, yt[:50], split="test")
    results = root / "results"
    out = {}
    for rep, key in (("clean", KEYS[0]), ("noisy", KEYS[1])):
        for head in ("linear", "knn"):
            for seed in (0, 1, 2) if head == "linear" else (0,):
                name = f"{rep}-{head}-s{seed}"
                out[name] = probe(
                    ProbeConfig(
                        train=root / "tr.zarr",
                        test=root / "te.zarr",
                        results=results,
                        heads=(head,),
                        progress=False,
                        name=name,
                        blocks=(key.b,),
                        training=TrainSettings(epochs=2, batch_size=32, seed=seed),
                    )
                )
    probe(
        ProbeConfig(
            train=root / "tr.zarr",
            test=root / "short.zarr",
            results=root / "other",
            heads=("linear",),
            progress=False,
            name="short-linear-s0",
            blocks=(3,),
            training=TrainSettings(epochs=1, batch_size=32),
        )
    )
    fd = root / "fd.json"
    fd.write_text(json.dumps({"fd": 12.3456, "precision": 0.81, "recall": 0.62}))
    return root, results, out, fd


def test_cells_and_differences_equal_the_runs_and_analysis_diff(table_runs):
    root, results, out, fd = table_runs
    rows = [
        f"clean={results}/clean-{{head}}-*.json",
        f"noisy={results}/noisy-{{head}}-*.json",
        f"absent={results}/absent-{{head}}-*.json",
    ]
    t = build_table(
        parse_rows(rows), ["linear", "knn"], reference="clean", generation=[f"clean={fd}"], resamples=300
    )
    for rep in ("clean", "noisy"):
        accs = [out[f"{rep}-linear-s{s}"]["test"]["top1"] for s in range(3)]
        cell = t.cells[rep, "linear"]
        assert (
            cell.top1 == pytest.approx(accs)
            and cell.mean == pytest.approx(statistics.mean(accs))
            and cell.std == pytest.approx(statistics.stdev(accs))
        )
        assert t.cells[rep, "knn"].std == 0 and len(t.cells[rep, "knn"].runs) == 1
        assert set(cell.points) == {f"t10/b{3 if rep == 'clean' else 4}/p2"}
    d = compare([f"{results}/noisy-linear-s*.json"], [f"{results}/clean-linear-s*.json"], resamples=300)
    assert (
        t.diffs["noisy", "linear"].points,
        t.diffs["noisy", "linear"].low,
        t.diffs["noisy", "linear"].high,
    ) == (d.points, d.low, d.high)
    assert ("absent", "linear") not in t.cells and ("clean", "linear") not in t.diffs
    text = markdown(t)
    clean = f"| clean | {t.cells['clean', 'linear'].text()} | {t.cells['clean', 'knn'].text()} "
    assert clean + "| 12.35 (P 0.81, R 0.62) |" in text
    assert "| absent | not run | not run |  |" in text and "| FD (precision, recall) |" in text
    fd_tv = root / "fd-tv.json"
    fd_tv.write_text(json.dumps({"fd": 12.3456, "precision": 0.81, "recall": 0.62, "class_tv": 0.0512}))
    with_tv = markdown(
        build_table(parse_rows(rows[:1]), ["linear"], generation=[f"clean={fd_tv}"], resamples=10)
    )
    assert (
        "| FD (precision, recall, class TV) |" in with_tv
        and "| 12.35 (P 0.81, R 0.62, class TV 0.05) |" in with_tv
    )
    assert (
        f"| noisy | linear | {d.points:+.2f} | {d.interval()} |" in text
        and "over 72 test images (300 resamples)" in text
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--row", "clean"], "give LABEL=PATTERN"),
        (["--row", "clean=x.json"], "needs {head}"),
        (
            ["--row", "a={results}/clean-{{head}}-*.json", "--row", "a={results}/noisy-{{head}}-*.json"],
            "given twice",
        ),
        (["--row", "a={results}/none-{{head}}-*.json"], "no results file matches"),
        (["--row", "a={results}/clean-{{head}}-*.json", "--ref", "b"], "--ref 'b' is not a row"),
        (["--row", "a={results}/clean-{{head}}-*.json", "--fd", "b={fd}"], "--fd names no row: b"),
        (["--row", "a={results}/clean-{{head}}-*.json", "--fd", "a={root}/nothing.json"], "file not found"),
        (
            ["--row", "a={results}/clean-{{head}}-*.json", "--row", "b={root}/other/short-{{head}}-*.json"],
            "different test rows",
        ),
    ],
)
def test_bad_input_is_one_line(table_runs, args, message):
    root, results, _, fd = table_runs
    done = CliRunner().invoke(cli, ["table", *(a.format(results=results, root=root, fd=fd) for a in args)])
    assert (
        done.exit_code == 2
        and message in done.output
        and "Traceback" not in done.output
        and len(done.output.strip().splitlines()) == 1
    ), done.output


def test_the_command_prints_and_writes_the_table(table_runs, tmp_path):
    root, results, _, fd = table_runs
    out = tmp_path / "t.md"
    done = CliRunner().invoke(
        cli,
        [
            "table",
            "--head",
            "linear,knn",
            "--ref",
            "clean",
            "--row",
            f"clean={results}/clean-{{head}}-*.json",
            "--row",
            f"noisy (b=4)={results}/noisy-{{head}}-*.json",
            "--fd",
            f"noisy (b=4)={fd}",
            "--resamples",
            "200",
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    assert (
        done.output == out.read_text()
        and "| representation | linear test top-1 | knn test top-1 | FD (precision, recall) |" in done.output
    )
    saved = json.loads(out.with_suffix(".json").read_text())
    assert (
        saved["reference"] == "clean"
        and len(saved["cells"]) == 4
        and {d["head"] for d in saved["differences"]} == {"linear", "knn"}
    )
    assert (
        saved["generation"]["noisy (b=4)"]["fd"] == 12.3456 and "| noisy (b=4) | linear |" in done.output
    )  # a label may hold "=" and saved["invocation"]["command"].endswith("table")


@pytest.mark.slow
def test_the_module_loads_no_torch():
    code = "import sys, analysis.seed_table; print('torch' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_rows_found_on_disk_in_natural_order_with_their_fd_and_a_plot(tmp_path):
    """--rows-from: one row per checkpoint (step2 before step10), columns per point; --fd-from and --plot."""
    x, y, c = blobs(96, 4, 16, seed=0, shape=(4, 2, 2))
    make_store(tmp_path / "tr.zarr", {KEYS[0]: x}, y)
    xt, yt, _ = blobs(40, 4, 16, seed=1, shape=(4, 2, 2), centres=c, spread=2.5)
    make_store(tmp_path / "te.zarr", {KEYS[0]: xt}, yt, split="test")
    res = tmp_path / "curve"
    for step in ("step2", "step10"):
        for point in ("best", "paper"):
            probe(
                ProbeConfig(
                    train=tmp_path / "tr.zarr",
                    test=tmp_path / "te.zarr",
                    results=res,
                    heads=("linear",),
                    progress=False,
                    name=f"{step}-{point}",
                    training=TrainSettings(epochs=1, batch_size=16),
                )
            )
    (res / "step10-fd.json").write_text(json.dumps({"fd": 3.5}))
    plot = tmp_path / "curve.png"
    done = CliRunner().invoke(
        cli,
        [
            "table",
            "--rows-from",
            f"{res}/{{row}}-{{head}}.json",
            "--head",
            "best,paper",
            "--fd-from",
            f"{res}/{{row}}-fd.json",
            "--plot",
            str(plot),
            "--title",
            "over training",
        ],
    )
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if line.startswith("| step")]
    assert [line.split(" | ")[0] for line in lines] == ["| step2", "| step10"]
    assert lines[0].endswith("|  |") and "3.50 |" in lines[1]
    assert plot.stat().st_size > 0 and plot.with_suffix(".svg").is_file()
    bad = CliRunner().invoke(cli, ["table", "--rows-from", f"{res}/{{row}}.json"])
    assert bad.exit_code == 2 and "needs both {row} and {head}" in bad.output
    none = CliRunner().invoke(cli, ["table", "--rows-from", f"{tmp_path}/nothing-{{row}}-{{head}}.json"])
    assert none.exit_code == 2 and "it found no results file" in none.output
    twice = CliRunner().invoke(
        cli,
        [
            "table",
            "--row",
            f"step2={res}/step2-{{head}}.json",
            "--rows-from",
            f"{res}/{{row}}-{{head}}.json",
            "--head",
            "best",
        ],
    )
    assert twice.exit_code == 2 and "rows named twice: step2" in twice.output
