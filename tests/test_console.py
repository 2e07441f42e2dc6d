"""The `diffprobe` console command: each stage under one name, installed with the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffprobe", *args], capture_output=True, text=True, timeout=120)


def test_the_stages_answer_under_one_name():
    done = run()
    assert done.returncode == 0 and "diffprobe STAGE" in done.stdout and all(s in done.stdout for s in ("extract", "probe", "analysis"))
    done = run("probe", "--help")
    assert done.returncode == 0 and "Usage: diffprobe probe" in done.stdout and "train" in done.stdout


def test_an_unknown_stage_is_one_line():
    done = run("train")
    assert done.returncode == 2 and done.stderr.strip() == "error: unknown stage 'train'; choose one of: extract, probe, analysis"


def test_the_install_puts_the_command_beside_python():
    script = Path(sys.executable).with_name("diffprobe")
    assert script.is_file(), f"{script} missing: `pip install -e .` installs it (setup.cfg console_scripts)"
    done = subprocess.run([str(script), "extract", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Usage: diffprobe extract" in done.stdout
