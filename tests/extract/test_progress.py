"""Progress bars draw only on a terminal; elsewhere one line per epoch or shard takes their place."""

from __future__ import annotations

import io
import sys

from extract.store import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_there_is_no_bar_and_lines_are_printed(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress.bar(True, total=10, desc="work") as b:
        assert b.disable
        b.update(10)
    lines = progress.Lines(True, "extract", 10, "img")
    lines.add(4, "shard 0")
    lines.add(6, "shard 1")
    progress.line(False, "never shown: progress is off")
    out = err.getvalue().splitlines()
    assert len(out) == 2 and out[0].startswith("extract: shard 0 4/10 img (") and "ETA" in out[0]
    assert out[1].startswith("extract: shard 1 10/10 img") and "ETA 00:00" in out[1]


def test_on_a_terminal_the_bar_draws_and_lines_stay_quiet(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    with progress.bar(True, total=10, desc="work", file=err) as b:
        assert not b.disable
        b.update(10)
    progress.line(True, "a line the bar already shows")
    assert "work" in err.getvalue() and "a line the bar" not in err.getvalue()
    with progress.bar(False, total=10) as b:  # --no-progress turns the bar off anywhere
        assert b.disable
