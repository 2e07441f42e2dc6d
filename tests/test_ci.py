"""CI runs the README's commands with their own defaults: in `.ci/run`, a make command may set
LIMIT= (to shrink it) and otherwise only what the README itself writes for that target."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHRINKS = {"LIMIT"}
MAIN_COMMANDS = ["make test", "make extract T=150 B=24", "make probe HEAD=linear", "make cka", "make demo"]


def make_commands(text: str) -> list[tuple[str, dict[str, str]]]:
    """Every `make TARGET VAR=VALUE ...` in the text: (target, {VAR: VALUE})."""
    found = []
    for match in re.finditer(
        r"(?:^|`|\n)\s*make ([a-z][\w-]*)((?: +[A-Z_]+=(?:\"[^\"]*\"|'[^']*'|[^\s`]*))*)", text
    ):
        words = shlex.split(match.group(2))
        found.append((match.group(1), dict(w.split("=", 1) for w in words)))
    return found


def readme_settings() -> dict[str, dict[str, set[str]]]:
    """target -> variable -> the values the README shows ('...' stands for the user's own)."""
    shown: dict[str, dict[str, set[str]]] = {}
    for target, values in make_commands((ROOT / "README.md").read_text()):
        seen = shown.setdefault(target, {})
        for var, value in values.items():
            seen.setdefault(var, set()).add(value)
    return shown


def ci_commands() -> list[tuple[str, dict[str, str]]]:
    lines = [line.split("#")[0] for line in (ROOT / ".ci/run").read_text().splitlines()]
    return make_commands("\n".join(line for line in lines if line.strip().startswith("make ")))


def test_the_parser_reads_variables_and_targets():
    assert make_commands("make paper ROW=fusion LIMIT=200\n`make cka`") == [
        ("paper", {"ROW": "fusion", "LIMIT": "200"}),
        ("cka", {}),
    ]


def test_ci_sets_nothing_but_limit_that_the_readme_does_not_show():
    shown = readme_settings()
    problems = []
    for target, values in ci_commands():
        for var, value in values.items():
            if var in SHRINKS:
                continue
            allowed = shown.get(target, {}).get(var, set())
            if value not in allowed and "..." not in allowed:
                problems.append(
                    f"make {target} {var}={value} (README shows {sorted(allowed) or 'no ' + var})"
                )
    assert not problems, problems


def test_ci_runs_the_readmes_main_commands():
    ran = {
        (target, tuple(sorted((k, v) for k, v in values.items() if k not in SHRINKS)))
        for target, values in ci_commands()
    }
    for command in MAIN_COMMANDS:
        ((target, values),) = make_commands(command)
        assert command in (ROOT / "README.md").read_text()
        assert (target, tuple(sorted(values.items()))) in ran, command


def test_ci_checks_lint_first_then_runs_the_whole_suite():
    """A formatting slip fails CI in seconds, before the suite's minutes; CI runs every test."""
    targets = [target for target, _ in ci_commands()]
    assert targets[:2] == ["lint", "test"], targets[:2]
    makefile = (ROOT / "Makefile").read_text()
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "ruff check ." in lint and "ruff format --check ." in lint
    test = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "pytest" in test and "not slow" not in test  # the whole suite, slow tests included
