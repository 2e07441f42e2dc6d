"""`extract bench` in-process on its smallest row (timings are not checked here)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from extract.cli import cli


def test_the_bench_command_prints_and_writes_the_rows_it_was_asked_for(tmp_path):
    out = tmp_path / "bench.json"
    done = CliRunner().invoke(cli, ["bench", "--model", "tiny-dit", "--device", "cpu", "--out", str(out)])
    assert done.exit_code == 0, done.output
    result = json.loads(out.read_text())
    assert result["rows"] == [] and [r["model"] for r in result["latent_rows"]] == ["tiny-dit"]
    assert "tiny-dit" in done.output and f"written to {out}" in done.output
