"""The leaderboard from a matrix's lines: means over seeds, the best per dataset, mean ranks,
paired intervals against a reference, and its three files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.cli import cli
from analysis.intervals import paired_bootstrap
from analysis.leaderboard import build, mean_ranks, to_csv, to_html, to_markdown, write_leaderboard


def predictions(folder, name, label, pred):
    path = folder / f"{name}.predictions.npz"
    index = np.arange(len(label))[::-1]  # stored out of order: the board aligns by index
    np.savez(path, index=index, label=np.asarray(label)[::-1], pred=np.asarray(pred)[::-1])
    return str(path)


def line(folder, model, dataset, seed, top1, label=None, pred=None, status="done"):
    out = {"cell": f"{model}__{dataset}__s{seed}", "model": model, "dataset": dataset, "seed": seed}
    out["format"] = "diffprobe-matrix-cell"
    if status != "done":
        return out | {"status": status, "error": "boom"}
    results = folder / f"{model}-{dataset}-{seed}.json"
    members = [
        {"head": "linear", "features": [{"t": t, "b": 1, "pool": 1}], "val": {"top1": top1 - t / 100}}
        for t in (10, 50)
    ]
    results.write_text(json.dumps({"members": members}))
    point = {"feature_set": "t10/b1/p1", "lr": 1e-3, "wd": 0.0, "val_top1": top1}
    prov = {"results": str(results), "stores": {"train": {"path": "s.zarr", "weights": {"sha256": "ab"}}}}
    if label is not None:
        prov["predictions"] = predictions(folder, out["cell"], label, pred)
    return out | {"status": "done", "linear": {"test_top1": top1}, "point": point, "provenance": prov}


def test_mean_ranks_share_ties_and_skip_missing_entries():
    class E:
        def __init__(self, mean):
            self.mean = mean

    entries = {("a", "x"): E(90), ("b", "x"): E(90), ("c", "x"): E(80), ("a", "y"): E(50), ("c", "y"): E(60)}
    ranks = mean_ranks(["a", "b", "c"], ["x", "y"], entries)
    # x: a and b tie for ranks 1-2 (1.5 each), c third; y: c first, a second; b has no y
    assert ranks == {"a": pytest.approx((1.5 + 2) / 2), "b": 1.5, "c": pytest.approx((3 + 1) / 2)}


def test_seeds_are_averaged_the_best_is_marked_and_the_reference_difference_is_paired(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, 40)
    right = {m: [rng.random(40) < p for _ in range(2)] for m, p in (("ref", 0.6), ("new", 0.8))}
    preds = {m: [np.where(r, label, (label + 1) % 3) for r in rs] for m, rs in right.items()}
    lines = [
        line(tmp_path, m, "d", s, 100 * right[m][s].mean(), label, preds[m][s])
        for m in ("ref", "new")
        for s in (0, 1)
    ]
    lines.append(line(tmp_path, "ref", "e", 0, 70.0))
    lines.append(line(tmp_path, "new", "e", 0, 0, status="failed"))
    board = build(lines, reference="ref")
    new = board.entries[("new", "d")]
    assert new.runs == [100 * r.mean() for r in right["new"]]
    assert new.sd == pytest.approx(np.std(new.runs, ddof=1)) and "(n=2)" in new.text()
    assert board.best == {"d": "new", "e": "ref"} and board.failed == ["new__e__s0"]
    expected = paired_bootstrap(np.array(right["new"]), np.array(right["ref"]), resamples=2000, seed=0)
    diff = board.diffs[("new", "d")]
    assert (diff["points"], diff["low"], diff["high"]) == pytest.approx(
        (expected.points, expected.low, expected.high)
    )
    md = to_markdown(board)
    assert "| new | **" in md and "failed" in md and "mean +- sample sd over n seeds" in md
    assert md.count("[") >= 1 and "Failed cells: new__e__s0" in md
    rows = to_csv(board).splitlines()
    assert rows[0].startswith("model,dataset,seeds,test_top1_mean") and len(rows) == 1 + 4
    page = to_html(board, "t")
    assert "<b>" in page and 'title="seed 0: t10/b1/p1' in page and "querySelectorAll" in page


def test_write_leaderboard_writes_csv_markdown_html_and_the_t_figure(tmp_path):
    lines = [line(tmp_path, m, "d", 0, v) for m, v in (("a", 80.0), ("b", 70.0))]
    written = write_leaderboard(lines, tmp_path / "board", title="demo")
    assert sorted(p.name for p in written) == [
        "by_t.png",
        "leaderboard.csv",
        "leaderboard.html",
        "leaderboard.md",
    ]
    assert all(p.stat().st_size > 0 for p in written)


def test_the_command_reads_results_jsonl_and_names_a_bad_line(tmp_path):
    lines = [line(tmp_path, m, "d", 0, v) for m, v in (("a", 80.0), ("b", 70.0))]
    jsonl = tmp_path / "results.jsonl"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = CliRunner().invoke(cli, ["leaderboard", "--results", str(jsonl), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "leaderboard.md").read_text().startswith("| model | d | mean rank |")
    jsonl.write_text(jsonl.read_text() + "{not json\n")
    result = CliRunner().invoke(cli, ["leaderboard", "--results", str(jsonl), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "results.jsonl, line 3: not a JSON line" in result.output
    result = CliRunner().invoke(
        cli, ["leaderboard", "--results", str(jsonl.with_name("none.jsonl")), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "matrix results not found" in result.output
    with pytest.raises(ValueError, match="reference model 'z' is not in the matrix"):
        build(lines, reference="z")


def test_the_report_has_a_section_for_each_matrix_under_its_results_folders(tmp_path):
    from analysis.report import build_report

    folder = tmp_path / "results" / "m"
    folder.mkdir(parents=True)
    lines = [line(folder, m, "d", 0, v) for m, v in (("a", 80.0), ("b", 70.0))]
    (folder / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    md, page, missing = build_report([tmp_path / "results"], [tmp_path / "none"], tmp_path / "report")
    text = md.read_text()
    assert "## Matrix" in text and "| a | **80.00** |" in text
    assert "<h2>Matrix</h2>" in page.read_text() and 'data-col="1"' in page.read_text()


def test_the_readme_shows_the_committed_demo_matrix_leaderboard():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    shown = readme.split("<!-- results:demo-matrix:begin -->\n")[1].split("<!-- results:demo-matrix:end -->")[
        0
    ]
    assert shown.strip() == (root / "evidence" / "matrix" / "leaderboard.md").read_text().strip()


def test_the_t_figure_can_put_each_models_log_snr_on_x(tmp_path):
    """Two models whose schedules differ: the same t is a different noise level in each, read
    from each cell's training store's key."""
    from analysis.leaderboard import build, by_t
    from extract.store.schema import FeatureKey, FeatureStore
    from tests.probe.stores import make_store

    lines = []
    for model, levels in (("a", {"10": 6.1, "50": 3.0}), ("b", {"10": 4.0, "50": 1.0})):
        store = tmp_path / f"{model}.zarr"
        make_store(store, {FeatureKey(10, 1, 1): np.zeros((4, 2, 1, 1), np.float16)}, np.arange(4) % 2)
        s = FeatureStore.open(store, mode="r+")
        key = dict(s.attrs["key"])
        key["noise_levels"] = {t: {"log_snr": v} for t, v in levels.items()}
        s.group.attrs["key"] = key
        entry = line(tmp_path, model, "d", 0, 80.0)
        entry["provenance"]["stores"]["train"]["path"] = str(store)
        lines.append(entry)
    board = build(lines)
    assert by_t(board, tmp_path)["d"]["a"] == {10: 79.9, 50: 79.5}
    curves = by_t(board, tmp_path, axis="log-snr")["d"]
    assert curves["a"] == {6.1: 79.9, 3.0: 79.5} and curves["b"] == {4.0: 79.9, 1.0: 79.5}
    result = CliRunner().invoke(
        cli,
        [
            "leaderboard",
            "--results",
            str(_jsonl(tmp_path, lines)),
            "--out",
            str(tmp_path / "b"),
            "--x",
            "log-snr",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "by_t.png").stat().st_size > 0
    lines[1]["provenance"]["stores"]["train"]["path"] = str(tmp_path / "plain.zarr")
    make_store(
        tmp_path / "plain.zarr", {FeatureKey(10, 1, 1): np.zeros((4, 2, 1, 1), np.float16)}, np.arange(4) % 2
    )
    with pytest.raises(ValueError, match="records no noise levels"):
        by_t(build(lines), tmp_path, axis="log-snr")


def _jsonl(folder, lines):
    path = folder / "results.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path
