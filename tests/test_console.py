"""The `diffprobe` console command: each stage under one name, installed with the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# each test starts the command in a fresh interpreter, or runs the README's pipeline end to end
pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffprobe", *args], capture_output=True, text=True, timeout=120
    )


def test_the_stages_answer_under_one_name():
    done = run()
    assert (
        done.returncode == 0
        and "diffprobe STAGE" in done.stdout
        and all(s in done.stdout for s in ("extract", "probe", "analysis"))
    )
    done = run("probe", "--help")
    assert done.returncode == 0 and "Usage: diffprobe probe" in done.stdout and "train" in done.stdout


def test_an_unknown_stage_is_one_line():
    done = run("train")
    assert (
        done.returncode == 2
        and done.stderr.strip()
        == "error: unknown stage 'train'; choose one of: extract, probe, analysis, experiment, matrix"
    )


def test_experiments_answer_under_the_same_name():
    done = run("experiment")
    assert done.returncode == 0 and "demo " in done.stdout and "rows: linear-p1" in done.stdout
    done = run("experiment", "report", "--dry-run", "--set", "report_title=x")
    assert done.returncode == 0 and done.stdout.startswith("diffprobe analysis report --results results")
    done = run("experiment", "paper", "--row", "gan", "--dry-run")
    assert done.returncode == 2 and done.stderr.strip().startswith("error: unknown ROW=gan: choose one of")


def test_the_install_puts_the_command_beside_python():
    script = Path(sys.executable).with_name("diffprobe")
    assert script.is_file(), f"{script} missing: `pip install -e .` installs it (setup.cfg console_scripts)"
    done = subprocess.run([str(script), "extract", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Usage: diffprobe extract" in done.stdout


def test_the_readmes_python_api_runs_as_written(tmp_path, fmnist_env, monkeypatch):
    """The README's Python block, executed with only its image counts shrunk (the fake
    Fashion-MNIST of the tests has 96 train and 32 test images)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    assert "N_TRAIN, N_TEST = 2000, 1000" in code
    code = code.replace("N_TRAIN, N_TEST = 2000, 1000", "N_TRAIN, N_TEST = 64, 32")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    result, blocks = scope["result"], scope["blocks"]
    # validation carved from the 64
    assert result["stores"]["train"]["rows"] < 64 and result["stores"]["test"]["rows"] == 32
    assert result["head"]["feature_set"] in ("t10/b7/p2", "t10/b9/p2") and 0 <= result["test"]["top1"] <= 100
    assert blocks.matrix.shape == (2, 2) and abs(blocks.matrix[0, 0] - 1) < 1e-6
    assert (tmp_path / "cache" / "api-train.zarr").is_dir() and (
        tmp_path / "results" / "api" / "probe_results.csv"
    ).is_file()
