"""Parity of an experiment's dry run with the old TOML runner's, command by command.

Record the old runner's lines of a case (while extract/experiments/NAME.toml still exists):

    PYTHONPATH=$PWD .venv/bin/python -m tests.diffprobe.parity record NAME [--row R] [--file P ...] [k=v ...]

adds the case to parity/NAME.json (one file per experiment). Both runners run in an empty folder
holding only the case's files (`--file P`: an empty file at the relative path P), so a step that
depends on a file being there sees the same disk in both; `check` compares every case with
`diffprobe experiment` (also
tests/diffprobe/test_parity.py). A command matches when the stage's own parser reads the same
options from both lines (order and options left at their default do not matter); other lines
match as text; `--plan` lines of the old runner are left out (the new runner prints each plan
at once), and plans are compared only where the old runner printed them.
"""

from __future__ import annotations

import importlib
import json
import shlex
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).with_name("parity")  # one NAME.json of cases per experiment
ROOT = Path(__file__).resolve().parents[2]
OUT = "parity-cache"  # every case's OUT: a folder that holds no record


def cases() -> list[dict]:
    return [case for path in sorted(DATA.glob("*.json")) for case in json.loads(path.read_text())]


def make_files(folder: Path, files: list[str]) -> None:
    """The case's files, empty, under `folder` (what its steps' conditions look for)."""
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()


def old_lines(name: str, row: str | None, sets: dict[str, str], files: list[str] = ()) -> list[str]:
    """The old runner's dry run in an empty folder holding `files`, `python -m STAGE` spelled
    `diffprobe STAGE`, --plan lines left out."""
    argv = [sys.executable, "-m", "extract", "experiment", name, "--dry-run"]
    argv += [*(["--row", row] if row else []), *(f"--set={k}={v}" for k, v in sets.items())]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as folder:
        make_files(Path(folder), list(files))
        done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=folder, env=env)
    lines = []
    for line in done.stdout.splitlines():
        words = line.split(" ", 3)
        if len(words) > 2 and words[1:3] == ["-m", words[2]] and words[0].endswith("python"):
            if line.endswith(" --plan") or " --plan --images-per-s " in line:
                continue
            line = "diffprobe " + line.split(" ", 2)[2]
        lines.append(line)
    return lines


def new_lines(name: str, row: str | None, sets: dict[str, str], plans: bool = True) -> list[str]:
    """`diffprobe experiment NAME --dry-run`'s lines (without plans: no dataset is read)."""
    from diffprobe.experiments import steps
    from diffprobe.experiments.registry import get_experiment, run_experiment

    spec, lines = get_experiment(name), []
    show = steps.Extract.show
    if not plans:
        steps.Extract.show = lambda self, echo: echo(steps.command_line("extract", self.argv))
    try:
        run_experiment(spec, spec.settings(sets, row), dry=True, out=lines.append)
    finally:
        steps.Extract.show = show
    return lines


def options(line: str) -> tuple[str, dict]:
    """A command line's stage command and the options its parser reads from it."""
    words = shlex.split(line)[1:]
    group = importlib.import_module(f"{words[0]}.cli").cli
    command = group.commands[words[1]]
    ctx = command.make_context(words[1], words[2:])
    return f"{words[0]} {words[1]}", {k: v for k, v in ctx.params.items() if k != "config"}


def differences(old: list[str], new: list[str], plans: bool = True) -> list[str]:
    """What differs, line by line (empty: the same); `plans`: also each plan the old runner printed."""
    old_plans = {line for line in old if line.startswith("plan ")}
    new_plans = {line for line in new if line.startswith("plan ")}
    problems = [f"plan missing: {p}" for p in sorted(old_plans - new_plans)] if plans else []
    old = [line for line in old if not line.startswith("plan ")]
    new = [line for line in new if not line.startswith("plan ")]
    if len(old) != len(new):
        return [*problems, f"{len(old)} lines before, {len(new)} now:", *old, "--", *new]
    for a, b in zip(old, new):
        same = (
            options(a) == options(b) if a.startswith("diffprobe ") and b.startswith("diffprobe ") else a == b
        )
        if not same:
            problems.append(f"before: {a}\n   now: {b}")
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["record"]:
        name, rest = argv[1], argv[2:]
        row = rest[rest.index("--row") + 1] if "--row" in rest else None
        files = [rest[i + 1] for i, w in enumerate(rest) if w == "--file"]
        sets = {"out": OUT, **dict(w.split("=", 1) for w in rest if "=" in w)}
        path = DATA / f"{name}.json"
        found = json.loads(path.read_text()) if path.is_file() else []
        found = [c for c in found if (c["row"], c["sets"], c.get("files", [])) != (row, sets, files)]
        case = {"name": name, "row": row, "sets": sets}
        case |= {"files": files} if files else {}
        found.append({**case, "lines": old_lines(name, row, sets, files)})
        path.write_text(json.dumps(found, indent=1) + "\n")
        return 0
    failed, here = 0, Path.cwd()
    for case in cases():
        with tempfile.TemporaryDirectory() as folder:
            make_files(Path(folder), case.get("files", []))
            os.chdir(folder)
            try:
                new = new_lines(case["name"], case["row"], case["sets"])
            finally:
                os.chdir(here)
        problems = differences(case["lines"], new)
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {case['name']} {case['row'] or ''} {case['sets']}")
        print("\n".join(problems)) if problems else None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
