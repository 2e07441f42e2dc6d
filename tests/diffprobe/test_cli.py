"""The entry points in-process (their fresh-interpreter checks are in test_console.py, slow):
each stage's `python -m` module and the `diffprobe` command's dispatch."""

from __future__ import annotations

import importlib

import pytest

from diffprobe.cli import main


@pytest.mark.parametrize("stage", ["extract", "probe", "analysis"])
def test_each_stage_runs_as_a_module_through_its_click_group(stage):
    module = importlib.import_module(f"{stage}.__main__")
    assert module.main is importlib.import_module(f"{stage}.cli").main


def test_diffprobe_lists_the_stages_and_hands_a_stage_its_arguments(capsys):
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 0 and "Stages:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["probe", "--help"])
    assert done.value.code == 0 and "Usage: diffprobe probe" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["gan"])
    assert done.value.code == 2 and "unknown stage 'gan'" in capsys.readouterr().err


def test_python_m_diffprobe_is_the_console_command():
    module = importlib.import_module("diffprobe.__main__")
    assert module.main is main


def test_diffprobe_experiment_lists_the_experiments_and_refuses_an_unknown_one(capsys):
    with pytest.raises(SystemExit) as done:
        main(["experiment"])
    assert done.value.code == 0 and "demo-table" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["experiment", "nonsense"])
    assert done.value.code == 2 and "nonsense" in capsys.readouterr().err


def test_diffprobe_matrix_lists_its_cells_and_their_stores_and_refuses_a_bad_model(capsys, tmp_path):
    args = ["matrix", "--dry-run", "--models", "demo-fmnist,pixels", "--datasets", "digits", "--limit", "50"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--store-out", str(tmp_path / "s"), "--matrix-out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert done.value.code in (0, None), out
    assert "cell demo-fmnist__digits__s0: to run" in out and "cell pixels__digits__s0: to run" in out
    assert "diffprobe extract run --model demo-fmnist --data digits --split train --limit 50 -t 150" in out
    assert "plan " in out and "diffprobe extract pixels --data digits --split test" in out
    with pytest.raises(SystemExit) as done:
        main(["matrix", "--dry-run", "--models", "demo-fmnist,dino"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "unknown model 'dino'" in err and len(err.strip().splitlines()) == 1
