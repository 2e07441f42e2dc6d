"""The documented results are the evidence's: every generated block in the README, the model cards
and the evidence index equals what `python -m analysis docs` writes, and the numbers left in
prose are checked against the files they come from."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from analysis.docs import BLOCKS, Block, check_docs, markers, wrap, write_docs
from analysis.docs_format import Stat, interval, interval_labelled
from analysis.docs_index import evidence_index

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_docs_are_what_the_command_writes():
    stale = check_docs(ROOT)
    assert not stale, f"run `python -m analysis docs`; these blocks differ from the evidence: {stale}"


def _doc(tmp_path: Path, body: str) -> Path:
    begin, end = markers("x")
    (tmp_path / "doc.md").write_text(f"# title\n\n{begin}\n{body}\n{end}\n\nafter\n")
    return tmp_path / "doc.md"


def test_check_names_the_block_that_differs_and_write_fixes_only_the_block(tmp_path):
    doc = _doc(tmp_path, "old")
    blocks = [Block("doc.md", "x", lambda root: "| a |\n|---|\n| new |")]
    assert check_docs(tmp_path, blocks) == ["doc.md:x"]
    assert write_docs(tmp_path, blocks) == ["doc.md:x"]
    assert check_docs(tmp_path, blocks) == []
    assert doc.read_text().startswith("# title\n\n") and doc.read_text().endswith("\n\nafter\n")


def test_a_block_without_its_markers_is_an_error_naming_it(tmp_path):
    (tmp_path / "doc.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="doc.md:x"):
        check_docs(tmp_path, [Block("doc.md", "x", lambda root: "text")])


def test_an_error_in_one_block_writes_no_document(tmp_path):
    doc = _doc(tmp_path, "old")

    def broken(root):
        raise FileNotFoundError("evidence file missing: nothing.csv")

    with pytest.raises(FileNotFoundError):
        write_docs(tmp_path, [Block("doc.md", "x", lambda root: "new"), Block("doc.md", "x", broken)])
    assert "old" in doc.read_text()


def test_labels_say_what_a_number_is():
    assert Stat((92.62, 92.24, 92.14)).labelled() == "92.33 +- 0.25 (mean +- sd over 3 seeds)"
    assert Stat((92.58,)).labelled() == "92.58 (one run)"
    assert interval(-1.9533, -2.37, -1.53) == "-1.95 [-2.37, -1.53]"
    d = {"points": 0.3, "low": -0.12, "high": 0.71, "rows": 10000, "a_runs": [90.51], "b_runs": [90.21]}
    assert interval_labelled(d).endswith("over 10,000 test images; one run each)")
    # the t interval's half-width is the one the workflow benchmark wrote as its ci95
    work = json.loads((ROOT / "evidence/bench/workflow.json").read_text())
    arm = work["summary"][0]["test_top1"]["linear"]
    lo, hi = Stat(tuple(arm["values"])).t_interval()
    assert (hi - lo) / 2 == pytest.approx(arm["ci95"], abs=0.01)


def test_wrap_keeps_tables_and_code_and_wraps_prose_and_bullets():
    text = "| a | b |\n|---|---|\n\n```\n" + "x " * 80 + "\n```\n\n" + "word " * 40 + "\n\n- " + "item " * 30
    out = wrap(text, width=50)
    assert "| a | b |\n|---|---|" in out and ("x " * 80).strip() in out
    assert all(len(line) <= 50 for line in out.split("```")[-1].splitlines())
    assert "\n  item" in out


def test_the_evidence_index_names_a_file_no_entry_covers(tmp_path):
    (tmp_path / "evidence/sub").mkdir(parents=True)
    (tmp_path / "evidence/sub/a.json").write_text("{}")
    (tmp_path / "evidence/stray.txt").write_text("")
    (tmp_path / "evidence/index.toml").write_text(
        '[[entry]]\nfiles = ["sub/", "index.toml", "later/"]\nwritten_by = "w"\nbacks = "b"\n'
    )
    with pytest.raises(ValueError, match="stray.txt"):
        evidence_index(tmp_path)
    (tmp_path / "evidence/stray.txt").unlink()
    table = evidence_index(tmp_path)
    assert "[`sub/`](sub/)" in table and "`later/` (no file yet)" in table


def test_every_block_has_its_markers_once():
    for block in BLOCKS:
        text = (ROOT / block.doc).read_text()
        assert all(text.count(m) == 1 for m in markers(block.name)), block.label


# numbers that stay in prose, each with the evidence it is computed from


def _members(path: str) -> list[dict]:
    with (ROOT / path).open(newline="") as f:
        return list(csv.DictReader(f))


def _best(rows: list[dict]) -> dict:
    top = max(float(r["val_top1"]) for r in rows)
    return next(r for r in rows if float(r["val_top1"]) == top)


def test_the_test_counts_in_the_readme_are_the_fresh_clones():
    log = (ROOT / "evidence/tests/fresh-clone.txt").read_text()
    full = re.search(r"^(\d+) passed, (\d+) skipped in", log, re.M)
    fast = re.search(r"^(\d+) passed, \d+ skipped, \d+ deselected in (\d+)\.\d+s", log, re.M)
    readme = (ROOT / "README.md").read_text()
    words = {1: "one", 2: "two", 3: "three"}
    assert f"ran {full[1]} tests ({words[int(full[2])]}" in readme
    assert f"runs the {fast[1]} tests not marked slow in {fast[2]} s" in readme


def test_the_cards_prose_numbers_are_the_evidences():
    card = " ".join((ROOT / "extract/weights/MODEL_CARD.md").read_text().split())
    bigan = " ".join((ROOT / "extract/weights/bigan-fmnist.md").read_text().split())
    table = json.loads((ROOT / "evidence/demo-table/table.json").read_text())
    cell = {(c["row"], c["head"]): Stat(tuple(c["top1"])) for c in table["cells"]}
    diff = {(d["row"], d["head"]): d for d in table["differences"]}
    assert f"carry {cell['random weights', 'linear'].mean:.2f}% linearly" in card
    lead = diff["BiGAN", "linear"]
    assert f"by {-lead['points']:.2f} points [{-lead['high']:.2f}, {-lead['low']:.2f}]" in card
    members = _members("evidence/demo-card.members.csv")
    for pool, where in (("4", "at pool 4"), ("8", "at b=31's pool 8")):
        at = [m for m in members if m["pool"] == pool]
        tt = float(_best([m for m in at if m["run"] == "trained"])["test_top1"])
        rt = float(_best([m for m in at if m["run"] == "random-weights"])["test_top1"])
        assert f"+{tt - rt:.2f} {where}, {tt:.2f} vs {rt:.2f}" in card
    runs = _members("evidence/demo-table/probe_results.csv")

    def seconds(prefix: str) -> tuple[float, float]:
        s = [float(r["seconds"]) for r in runs if r["name"].startswith(prefix)]
        return min(s), max(s)

    lo, hi = seconds("diffusion-best-linear")
    assert f"took {lo:,.0f}-{hi:,.0f} s a run" in card
    lo, hi = seconds("random-linear")
    assert f"({lo:,.0f}-{hi:,.0f} s over the random control's)" in card
    lo, hi = seconds("diffusion-best-attention")
    assert f"an attention head {lo:.0f}-{hi:.0f} s at the best block" in card
    lo, hi = seconds("diffusion-paper-attention")
    assert f"and {lo:.0f}-{hi:.0f} s at the paper's 2x2 map" in card
    random_run = next(r for r in _members("evidence/demo-card.runs.csv") if r["name"] == "card-random")
    assert f"chose b={random_run['b']} ({random_run['test_top1']}, one run)" in card
    first = json.loads((ROOT / "evidence/demo-curve/demo-fmnist-best.json").read_text())
    last = json.loads((ROOT / "evidence/demo-curve/ema-step10000-best.json").read_text())
    assert f"{first['test']['top1']:.2f} after its first 5,000 steps" in bigan
    assert f"{last['test']['top1']:.2f} after 15,000 steps" in bigan
    assert f"t=10, b=9 {last['test']['top1']:.2f} (one run" in card
