"""The report: built from a real probe run's outputs; missing or empty tables are clear errors."""

from __future__ import annotations

import pytest

from analysis.report import build_report
from extract.store.schema import FeatureKey
from probe.grid import TrainSettings
from probe.run import ProbeConfig, probe
from tests.probe.stores import blobs, make_store


def test_report_has_the_accuracy_table_and_ablation_curves(tmp_path):
    keys = [FeatureKey(10, 3, 2), FeatureKey(50, 3, 2)]
    x, y, c = blobs(200, 4, 16, seed=0, shape=(4, 2, 2))
    make_store(tmp_path / "tr.zarr", {k: x for k in keys}, y)
    xt, yt, _ = blobs(80, 4, 16, seed=1, shape=(4, 2, 2), centres=c)
    make_store(tmp_path / "te.zarr", {k: xt for k in keys}, yt, split="test")
    probe(ProbeConfig(train=tmp_path / "tr.zarr", test=tmp_path / "te.zarr", results=tmp_path / "res",
                      training=TrainSettings(epochs=2, batch_size=32), progress=False, name="run1"))  # fmt: skip
    report = build_report(tmp_path / "res", None, tmp_path / "rep", "t")
    text = report.read_text()
    assert "| linear head | tiny | random-init | t=10, b=3, pool=2 | 180 |" in text or "| linear head | tiny | random-init | t=50, b=3, pool=2 | 180 |" in text
    assert "![run1](curves_run1.png)" in text and (tmp_path / "rep" / "curves_run1.png").is_file()


def test_missing_or_empty_results_table_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results table at"):
        build_report(tmp_path, None, tmp_path / "rep")
    (tmp_path / "probe_results.csv").write_text("name,head\n")
    with pytest.raises(ValueError, match="has no rows to report"):
        build_report(tmp_path, None, tmp_path / "rep")
