"""The two test tiers, held by the suite itself (hooks imported by tests/conftest.py).

- A test that starts a child process (subprocess, multiprocessing, os.fork), in its body or
  in a fixture it sets up, must be marked slow: otherwise it fails, naming the rule.
- A fast run over the whole suite (`pytest -m "not slow" tests`, which `make test-fast` is)
  fails if some module of the packages had none of its functions run. A module counts as
  touched when a function or method defined in it starts during the tests (not at import
  during collection: importing a module is not using it); a module that defines no function
  counts once it is imported. The calls are recorded by a trace hook that keeps no per-line
  tracing, only when this check is on, and only until every module with functions has had one
  run: the hook costs one Python call per Python call, so it is switched off as soon as it has
  nothing left to find.
"""

from __future__ import annotations

import ast
import inspect
import multiprocessing.util
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("extract", "probe", "analysis", "diffprobe")
FAST = "not slow"
# a fast test over this long (wall and CPU time both: a busy machine inflates the wall time, several
# threads the CPU time) is listed at the end of a fast run, as a candidate for the slow mark
SLOW_SECONDS = 3.0

_children = [0]
_codes: set = set()
_durations: dict[str, tuple[float, float]] = {}
_started_children = pytest.StashKey[int]()


def _count_child() -> None:
    _children[0] += 1


def _counting(real):
    def start(*args, **kwargs):
        _count_child()
        return real(*args, **kwargs)

    return start


def _trace(frame, event, arg):
    # only the first event of each new frame reaches here (the global trace function); returning
    # None asks for no line events, so the cost is one call per Python function call
    _codes.add(frame.f_code)


class _Pending:
    """The package modules with functions none of which has run yet, narrowed after each test."""

    def __init__(self) -> None:
        self.paths = {path for path, has_functions in package_modules().items() if has_functions}
        self.resolved: dict[str, Path] = {}

    def narrow(self) -> bool:
        """Drop the modules whose functions ran since the last call; True once none is left."""
        global _codes
        batch, _codes = _codes, set()
        _ran.update(batch)
        for path in _ran_paths(batch, self.resolved):
            self.paths.discard(path)
        return not self.paths


_ran: set = set()
_pending: list[_Pending] = []


def _ran_paths(codes: set, resolved: dict[str, Path] | None = None) -> set[Path]:
    resolved = {} if resolved is None else resolved
    paths = set()
    for code in codes:
        if code.co_flags & inspect.CO_NEWLOCALS and not code.co_name.startswith("<"):
            name = code.co_filename
            if name not in resolved:
                resolved[name] = Path(name).resolve()
            paths.add(resolved[name])
    return paths


def _is_whole_fast_run(config: pytest.Config) -> bool:
    if config.option.markexpr != FAST or config.option.keyword or config.option.deselect:
        return False
    if getattr(config.option, "lf", False) or getattr(config.option, "last_failed", False):
        return False
    targets = {Path(config.invocation_params.dir, a).resolve() for a in config.args}
    return bool(targets) and targets <= {ROOT / "tests", ROOT}


def package_modules() -> dict[Path, bool]:
    """Every module of the packages -> whether it defines a function (or method)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            found[path] = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(tree))
    return found


def untouched_modules(codes: set, imported: set[Path]) -> list[str]:
    """The package modules none of whose functions ran (or, with no function, never imported)."""
    ran = _ran_paths(codes)
    missing = []
    for path, has_functions in package_modules().items():
        if path not in (ran if has_functions else imported):
            missing.append(str(path.relative_to(ROOT)))
    return missing


def pytest_configure(config: pytest.Config) -> None:
    # the standard library asks `uname -p` once per process and caches it: ask before counting, so
    # that this one-time probe is charged to no test (it would be to whichever test came first)
    platform.processor()
    subprocess.Popen._execute_child = _counting(subprocess.Popen._execute_child)
    multiprocessing.util.spawnv_passfds = _counting(multiprocessing.util.spawnv_passfds)
    os.register_at_fork(before=_count_child)
    config.stash[_started_children] = 0
    config._whole_fast_run = _is_whole_fast_run(config) and sys.gettrace() is None


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config._whole_fast_run:
        _pending.append(_Pending())
        threading.settrace(_trace)
        sys.settrace(_trace)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    before, wall, cpu = _children[0], time.perf_counter(), time.process_time()
    item.stash[_started_children] = 0
    try:
        return (yield)
    finally:
        item.stash[_started_children] += _children[0] - before
        _durations[item.nodeid] = (time.perf_counter() - wall, time.process_time() - cpu)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    before, wall, cpu = _children[0], time.perf_counter(), time.process_time()
    result = yield
    setup = _durations.get(item.nodeid, (0.0, 0.0))
    _durations[item.nodeid] = (setup[0] + time.perf_counter() - wall, setup[1] + time.process_time() - cpu)
    started = item.stash.get(_started_children, 0) + _children[0] - before
    if started and item.get_closest_marker("slow") is None:
        pytest.fail(
            f"this test (or a fixture it set up) started {started} child process(es): mark it "
            "@pytest.mark.slow so that the fast tier (`make test-fast`) stays in-process",
            pytrace=False,
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    result = yield
    if _pending and sys.gettrace() is _trace and _pending[0].narrow():
        sys.settrace(None)
        threading.settrace(None)
        item.config._trace_stopped_after = item.nodeid
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not config._whole_fast_run:
        return
    sys.settrace(None)
    threading.settrace(None)
    if session.shouldstop or session.shouldfail:
        return  # stopped early (-x, --maxfail): what ran is not the tier
    imported = {
        Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)
    }
    missing = untouched_modules(_ran | _codes, imported)
    config._untouched = missing
    if missing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if config.option.markexpr == FAST:
        long = sorted((min(t), t, n) for n, t in _durations.items() if min(t) > SLOW_SECONDS)
        if long:
            terminalreporter.section(
                f"fast tests over {SLOW_SECONDS:.0f} s, set-up included (mark them slow?)"
            )
            for _, (wall, cpu), nodeid in reversed(long):
                terminalreporter.write_line(f"{wall:6.1f} s wall {cpu:6.1f} s CPU  {nodeid}")
    missing = getattr(config, "_untouched", None)
    if missing:
        terminalreporter.section("modules the fast tier never ran", red=True)
        terminalreporter.write_line(
            "no fast test ran a function of these modules: add a quick test that uses each"
        )
        for name in missing:
            terminalreporter.write_line(f"  {name}")
    elif missing is not None:
        terminalreporter.write_line(f"the fast tier ran a function of every module of {', '.join(PACKAGES)}")
        after = getattr(config, "_trace_stopped_after", None)
        if after:
            terminalreporter.write_line(f"(its call hook was switched off after {after})")
