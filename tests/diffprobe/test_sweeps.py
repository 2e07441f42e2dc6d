"""The sweeps (sweep-demo, sweep-full, bigan-curve): which stores and runs they make, and what
they skip."""

from __future__ import annotations

import pytest

from diffprobe.experiments.registry import get_experiment, run_experiment
from diffprobe.experiments.steps import command_line


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path, monkeypatch):
    """Steps are skipped when their output exists under the working folder: start from an empty
    one. Extractions show their command only (a plan reads the dataset)."""
    monkeypatch.chdir(tmp_path)
    show = lambda self, echo: echo(command_line("extract", self.argv))  # noqa: E731
    monkeypatch.setattr("diffprobe.experiments.steps.Extract.show", show)


def commands(name: str, **given: str) -> list[str]:
    spec, lines = get_experiment(name), []
    run_experiment(spec, spec.settings(given), dry=True, out=lines.append)
    return lines


def names(runs: list[str]) -> list[str]:
    return [run.split("--name ")[1].split()[0] for run in runs if "probe train" in run]


def test_the_sweep_extracts_both_models_on_its_subsets_whatever_random_says(monkeypatch):
    runs = commands("sweep-demo", sweep_n="30", sweep_test_n="20", random="1")
    extracts = [x for x in runs if "extract run" in x]
    assert len(extracts) == 8 and sum("--random-init" in x for x in extracts) == 4
    assert sum("--limit 30" in x and "--split train" in x for x in extracts) == 4
    assert all("--skip-small-maps" in x for x in extracts if "-b all" in x)
    assert names(runs) == [
        "sweep-pooled",
        "sweep-full",
        "sweep-random-pooled",
        "sweep-random-full",
        "sweep-pixels",
    ]
    monkeypatch.setattr("diffprobe.experiments.tables.made", lambda path: "_test_n20" in str(path))
    pixels = [x for x in commands("sweep-demo", sweep_n="30", sweep_test_n="20") if "extract pixels" in x]
    assert len(pixels) == 1 and "--limit 30" in pixels[0]


def test_sweep_full_probes_each_t_and_reads_the_pooled_sweep_when_it_exists(tmp_path):
    runs = commands("sweep-full", sweep_t="10,50", random="1")
    assert names(runs) == ["sweep-random-full-all-t10", "sweep-random-full-all-t50"]
    assert sum("extract run" in x and "--random-init" in x for x in runs) == 4
    assert "grid=results/sweep/sweep-random-pooled.json" not in runs[-1]
    (tmp_path / "results" / "sweep").mkdir(parents=True)
    (tmp_path / "results" / "sweep" / "sweep-pooled.json").write_text("{}")
    (tmp_path / "results" / "sweep" / "sweep-full-all-t50.json").write_text("{}")
    runs = commands("sweep-full", sweep_t="10,50")
    assert names(runs) == ["sweep-full-all-t10"]
    assert "grid=results/sweep/sweep-pooled.json" in runs[-1] and runs[-1].endswith(
        "sweep-full-grid.members.csv"
    )


def test_the_bigan_curve_probes_and_scores_each_snapshot_that_exists_then_chooses_on_validation(tmp_path):
    snaps = tmp_path / "run" / "snapshots"
    snaps.mkdir(parents=True)
    for step in (2000, 4000, 8000):  # every 4,000 steps is probed
        (snaps / f"bigan-step{step}.pt").write_bytes(b"")
    runs = commands("bigan-curve", bigan_run=str(tmp_path / "run"), bigan_curve_dir=str(tmp_path / "c"))
    features = [x for x in runs if "bigan-features" in x]
    assert len(features) == 4 and all("--skip-small-maps" in x for x in features)
    assert sum("--split train --limit 10000" in x for x in features) == 2
    assert names(runs) == ["bigan-step4000-linear", "bigan-step8000-linear"]
    assert sum("bigan-sample" in x and "--n 1000" in x for x in runs) == 2
    assert sum("analysis fid" in x for x in runs) == 2
    assert f"{tmp_path}/c/results/curve.md" in runs[-2] and "analysis table --rows-from" in runs[-2]
    assert "probe select" in runs[-1] and "bigan-step*-linear.json" in runs[-1]


def test_the_bigan_curve_takes_the_snapshots_and_results_folder_it_is_given(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"")
    (tmp_path / "c" / "results").mkdir(parents=True)
    (tmp_path / "c" / "results" / "a-fd.json").write_text("{}")
    given = {"bigan_ckpts": f"{tmp_path}/a.pt {tmp_path}/gone.pt", "bigan_curve_dir": str(tmp_path / "c")}
    runs = commands("bigan-curve", **given)
    assert names(runs) == ["a-linear"] and not any("analysis fid" in x for x in runs)
    runs = commands("bigan-curve", **given, results="elsewhere")
    assert "--results elsewhere" in next(x for x in runs if "probe train" in x)
    assert any("analysis fid" in x for x in runs)
