"""A fixture for the `analysis fid` tests: its feature steps in this process instead of a child.

The command runs each `extract features` step in a child process so that analysis never loads a
network itself (tests/test_imports.py checks that in a fresh interpreter, and a few tests here
keep the real child). Most tests check what the steps compute, and a child's start (importing
torch again) is most of their time, so they run the same command line in-process."""

from __future__ import annotations

import contextlib
import os

import pytest


def features_in_process(argv: list[str]) -> int:
    from extract.cli import main

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        try:
            main(["features", *argv])
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


@pytest.fixture
def in_process_features(monkeypatch):
    monkeypatch.setattr("analysis.fid.run_features", features_in_process)
