"""Every experiment's dry run against the command lines recorded in parity/NAME.json, command by
command. The cases were recorded from the TOML runner these functions replaced, each in an empty
folder holding only the case's files (an empty file at each relative path of "files"; a case with
"at_root" was recorded at the repository's root, beside the shipped weights and evidence).

    PYTHONPATH=$PWD .venv/bin/python -m tests.diffprobe.parity

checks every case (as tests/diffprobe/test_experiments.py does). A command matches when the
stage's own parser reads the same options from both lines (order and options left at their
default do not matter); other lines match as text; plans are compared where they were recorded.
"""

from __future__ import annotations

import importlib
import json
import shlex
import os
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).with_name("parity")  # one NAME.json of cases per experiment
ROOT = Path(__file__).resolve().parents[2]


def cases() -> list[dict]:
    return [case for path in sorted(DATA.glob("*.json")) for case in json.loads(path.read_text())]


def make_files(folder: Path, files: list[str]) -> None:
    """The case's files, empty, under `folder` (what its steps' conditions look for)."""
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()


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


# rows an experiment gained after the old runner was recorded: the MAE baseline's (its weights ship
# now), left out of the comparison, its commands and its `--row` of the table alike
ADDED_ROWS = ("mae",)


def without_rows_added_since(lines: list[str]) -> list[str]:
    """The lines without the commands and table rows of ADDED_ROWS."""
    out = []
    for line in lines:
        words = shlex.split(line) if line.startswith("diffprobe ") else None
        if words is None:
            out.append(line)
            continue
        outs = [
            w
            for i, w in enumerate(words)
            if i and words[i - 1] in ("--out", "--train", "--weights", "--ckpt")
        ]
        if any(Path(w).name.startswith(ADDED_ROWS) for w in outs):
            continue
        kept, i = [], 0
        while i < len(words):
            if words[i] == "--row" and i + 1 < len(words) and words[i + 1].lower().startswith(ADDED_ROWS):
                i += 2
                continue
            kept.append(words[i])
            i += 1
        out.append(shlex.join(kept) if kept != words else line)
    return out


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
