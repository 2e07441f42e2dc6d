"""The matrix: entries, cell keys, a run of every cell, resume after a kill, failed cells, and
one-line errors for bad entries."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from diffprobe.experiments.steps import Command, Extract
from diffprobe.matrix import cells as cells_module
from diffprobe.matrix.cells import Cell, HeadPlan, Plan, cell_key, finished
from diffprobe.matrix.entries import DatasetEntry, EntryError, ModelEntry, Region, datasets_from, models_from
from diffprobe.matrix.run import MatrixConfig, cells_of, run_matrix
from diffprobe.matrix.slurm import extra_parameters
from diffprobe.matrix.summary import summarize

TINY = ModelEntry(name="tiny-random", model="tiny", random=True, t=(10,), b=("1", "2"), pool=("1",))
PIXELS = ModelEntry(name="pixels", kind="pixels")
FMNIST = DatasetEntry(name="fmnist", data="fashion-mnist")
DIGITS = DatasetEntry(name="digits", data="digits", limit=120)
HEADS = HeadPlan(lrs=(1e-2,), wds=(0.0,), epochs=2, batch_size=16, knn=(3,))


def config(tmp_path: Path, **kw) -> MatrixConfig:
    plan = Plan(tmp_path / "out", tmp_path / "stores", Region(), None, HEADS)
    values = dict(models=(TINY, PIXELS), datasets=(FMNIST, DIGITS), plan=plan, progress=False)
    return MatrixConfig(**(values | kw))


def count_steps(monkeypatch) -> list[str]:
    """Every extraction step run, by its command's first word."""
    ran: list[str] = []
    for cls in (Extract, Command):
        real = cls.run

        def counted(self, echo, real=real):
            ran.append(self.argv[0])
            return real(self, echo)

        monkeypatch.setattr(cls, "run", counted)
    return ran


# ---------------------------------------------------------------- entries and keys (fast)
def test_lists_and_files_give_the_same_entries(tmp_path):
    assert models_from("demo-fmnist,pixels,torchvision:resnet50") == [
        ModelEntry(name="demo-fmnist", model="demo-fmnist"),
        ModelEntry(name="pixels", kind="pixels"),
        ModelEntry(name="torchvision-resnet50", model="torchvision:resnet50"),
    ]
    f = tmp_path / "m.toml"
    f.write_text('[models.best]\nmodel = "demo-fmnist"\nt = [10]\nb = ["30", "31"]\npool = ["4", "full"]\n')
    assert models_from(str(f)) == [
        ModelEntry(name="best", model="demo-fmnist", t=(10,), b=("30", "31"), pool=("4", "full"))
    ]
    d = tmp_path / "d.toml"
    d.write_text('[datasets.air]\ndata = "aircraft"\nroot = "/data/air"\noptions = ["level=family"]\n')
    assert datasets_from(str(d)) == [
        DatasetEntry(name="air", data="aircraft", root=Path("/data/air"), options=("level=family",))
    ]


def test_bad_entries_are_one_line_naming_the_entry_or_its_line(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('[models.a]\nmodel = "demo-fmnist"\n\n[models.b]\nmodle = "tiny"\n')
    with pytest.raises(EntryError, match=r"m.toml, line 4: entry 'b': unknown key 'modle'"):
        models_from(str(f))
    f.write_text('[models.a]\nmodel = "demo-fmnist\n')
    with pytest.raises(EntryError, match=r"not valid TOML .*line 2"):
        models_from(str(f))
    plan = Plan(tmp_path, tmp_path)
    with pytest.raises(EntryError, match=r"unknown model 'nonsense' \(models: .*demo-fmnist.*pixels"):
        cells_of(MatrixConfig((ModelEntry(name="x", model="nonsense"),), (FMNIST,), plan))
    with pytest.raises(EntryError, match="two model entries are named 'pixels'"):
        cells_of(MatrixConfig((PIXELS, PIXELS), (FMNIST,), plan))
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist' \(datasets: fashion-mnist, digits"):
        cells_of(MatrixConfig((PIXELS,), (DatasetEntry(name="m", data="mnist"),), plan))
    with pytest.raises(EntryError, match="kind pixels takes no t"):
        cells_of(MatrixConfig((ModelEntry(name="p", kind="pixels", t=(10,)),), (FMNIST,), plan))


def test_the_key_holds_what_changes_a_result_and_not_how_it_runs(tmp_path):
    plan = Plan(tmp_path / "a", tmp_path / "s", Region(), 100, HEADS)
    cell = Cell(TINY, FMNIST, 0)
    key = cell_key(plan, cell)
    # where results and stores go, and the executor's settings, are not in it
    assert cell_key(dataclasses.replace(plan, out=tmp_path / "b", stores=tmp_path / "t"), cell) == key
    changed = [
        cell_key(plan, Cell(TINY, FMNIST, 1)),
        cell_key(plan, Cell(dataclasses.replace(TINY, b=("1",)), FMNIST, 0)),
        cell_key(dataclasses.replace(plan, limit=200), cell),
        cell_key(dataclasses.replace(plan, heads=dataclasses.replace(HEADS, lrs=(1e-3,))), cell),
        cell_key(plan, Cell(TINY, dataclasses.replace(FMNIST, options=("x=y",)), 0)),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    # a weights file enters by its content
    w = tmp_path / "w.pt"
    w.write_bytes(b"one")
    with_w = Cell(dataclasses.replace(TINY, random=False, weights=w), FMNIST, 0)
    first = cell_key(plan, with_w)
    w.write_bytes(b"two")
    assert cell_key(plan, with_w) != first
    # the seed of a model without noise changes only the head's seed
    assert cell_key(plan, Cell(PIXELS, FMNIST, 0)) != cell_key(plan, Cell(PIXELS, FMNIST, 1))


def test_a_cell_is_finished_only_when_its_line_is_done_for_its_key(tmp_path):
    plan = Plan(tmp_path, tmp_path)
    cell = Cell(PIXELS, FMNIST, 0)
    path = cells_module.cell_path(plan, cell)
    assert not finished(plan, cell)
    cells_module.write_atomic(path, {"status": "failed", "key": cell_key(plan, cell)})
    assert not finished(plan, cell)
    cells_module.write_atomic(path, {"status": "done", "key": "other"})
    assert not finished(plan, cell)
    cells_module.write_atomic(path, {"status": "done", "key": cell_key(plan, cell)})
    assert finished(plan, cell) and not list(path.parent.glob(".*.tmp"))


def test_the_summary_takes_the_linear_choice_and_the_extra_heads():
    member = {"head": "linear", "features": [{"t": 10, "b": 1, "pool": 1}], "feature_set": "t10/b1/p1"}
    linear = {
        "name": "c",
        "version": "0.1.0",
        "validation": "10% of train",
        "predictions": "c.predictions.npz",
        "selected": 1,
        "members": [
            member
            | {"lr": 1e-3, "wd": 0.0, "val": {"top1": 50, "top5": 90}, "test": {"top1": 99, "top5": 99}},
            member
            | {"lr": 1e-2, "wd": 0.0, "val": {"top1": 60, "top5": 91}, "test": {"top1": 55, "top5": 92}},
        ],
        "stores": {
            r: {"path": f"{r}.zarr", "rows": 9, "dataset": {"name": "d"}, "key": {}}
            for r in ("train", "test")
        },
    }
    knn = {"members": [{"k": 3, "val": {"top1": 40, "top5": 80}, "test": {"top1": 41, "top5": 81}}]}
    line = summarize(Cell(TINY, FMNIST, 0), {}, linear, {"knn": knn}, Path("runs"))
    assert line["point"]["lr"] == 1e-2 and line["linear"] == {
        "val_top1": 60,
        "val_top5": 91,
        "test_top1": 55,
        "test_top5": 92,
    }
    assert (
        line["knn"]["k3"]["test_top1"] == 41 and line["provenance"]["predictions"] == "runs/c.predictions.npz"
    )
    assert line["provenance"]["stores"]["test"]["dataset"] == {"name": "d"}


def test_sbatch_extra_options_are_key_value_pairs():
    assert extra_parameters(("account=abc", "qos = high", "mail-type=END")) == {
        "account": "abc",
        "qos": "high",
        "mail_type": "END",
    }
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        extra_parameters(("exclusive",))


# ---------------------------------------------------------------- runs (slow: they extract and train)
@pytest.mark.slow
def test_every_cell_runs_and_a_rerun_extracts_and_trains_nothing(tmp_path, fmnist_env, monkeypatch):
    ran = count_steps(monkeypatch)
    cfg = config(tmp_path)
    outcome = run_matrix(cfg, echo=lambda _: None)
    assert (outcome.cells, outcome.ran, outcome.failed) == (4, 4, [])
    # each cell made its train and test stores: 8 extractions, none shared
    assert sorted(ran) == ["pixels"] * 4 + ["run"] * 4
    lines = [json.loads(t) for t in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [x["cell"] for x in lines] == [c.name for c in cells_of(cfg)]
    tiny = lines[0]
    assert tiny["status"] == "done" and tiny["point"]["feature_set"] in ("t10/b1/p1", "t10/b2/p1")
    assert set(tiny["knn"]) == {"k3"} and tiny["provenance"]["stores"]["train"]["weights"]["random_init"]
    ran.clear()
    monkeypatch.setattr("probe.run.probe", lambda cfg: pytest.fail("a finished cell trained again"))
    again = run_matrix(dataclasses.replace(cfg, jobs=3, device="cpu"), echo=lambda _: None)
    assert (again.ran, again.skipped, ran) == (0, 4, [])
    assert again.lines == outcome.lines


@pytest.mark.slow
def test_a_killed_matrix_resumes_to_the_same_leaderboard_and_reruns_only_what_was_left(
    tmp_path, fmnist_env, monkeypatch
):
    from analysis.leaderboard import write_leaderboard

    whole = run_matrix(config(tmp_path / "whole"), echo=lambda _: None)
    write_leaderboard(whole.lines, tmp_path / "whole-board")
    import probe.run

    real, calls = probe.run.probe, []

    def dies_on_the_third_cell(cfg):
        calls.append(cfg.name)
        if len(calls) == 5:  # two heads per cell: the third cell's linear grid
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setattr(probe.run, "probe", dies_on_the_third_cell)
    cfg = config(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        run_matrix(cfg, echo=lambda _: None)
    monkeypatch.setattr(probe.run, "probe", real)
    ran = count_steps(monkeypatch)
    resumed = run_matrix(cfg, echo=lambda _: None)
    assert (resumed.ran, resumed.skipped) == (2, 2)
    # the third cell's stores were made before the kill: only the fourth cell extracts
    assert ran == ["pixels", "pixels"]
    write_leaderboard(resumed.lines, tmp_path / "resumed-board")
    for name in ("leaderboard.csv", "leaderboard.md"):
        assert (tmp_path / "resumed-board" / name).read_text() == (
            tmp_path / "whole-board" / name
        ).read_text()


@pytest.mark.slow
def test_a_missing_dataset_fails_only_its_cells_which_the_next_run_retries(tmp_path, fmnist_env):
    missing = DatasetEntry(name="gone", data="imagefolder", root=tmp_path / "nowhere")
    cfg = config(tmp_path, models=(PIXELS,), datasets=(FMNIST, missing))
    outcome = run_matrix(cfg, echo=lambda _: None)
    assert outcome.failed == ["pixels__gone__s0"]
    line = json.loads((tmp_path / "out" / "cells" / "pixels__gone__s0.json").read_text())
    assert line["status"] == "failed" and "nowhere" in line["error"] and Path(line["log"]).is_file()
    hint = f"diffprobe extract check-data --data imagefolder --data-root {missing.root}"
    assert line["hint"] == f"check the dataset with: {hint}"
    again = run_matrix(cfg, echo=lambda _: None)
    assert (again.ran, again.skipped) == (1, 1)


def test_cells_at_once_are_bounded_by_cores_and_gpus():
    from diffprobe.matrix.run import bound_jobs

    assert bound_jobs(8, cores=2, gpus=0) == 2 and bound_jobs(8, cores=64, gpus=4) == 4
    assert bound_jobs(3, cores=64, gpus=0) == 3 and bound_jobs(0, cores=4, gpus=0) == 1


@pytest.mark.slow
def test_two_cells_at_once_give_the_lines_of_one_at_a_time(tmp_path, fmnist_env):
    keys = ("point", "linear", "knn", "key")
    one = run_matrix(config(tmp_path / "one", models=(PIXELS,)), echo=lambda _: None)
    two = run_matrix(config(tmp_path / "two", models=(PIXELS,), jobs=2), echo=lambda _: None)
    assert two.failed == [] and [{k: x[k] for k in keys} for x in two.lines] == [
        {k: x[k] for k in keys} for x in one.lines
    ]


def test_a_presets_shipped_weights_enter_the_key_by_their_content(tmp_path, monkeypatch):
    from extract.models.families import MODELS

    plan = Plan(tmp_path, tmp_path)
    cell = Cell(ModelEntry(name="demo", model="demo-fmnist"), FMNIST, 0)
    first = cell_key(plan, cell)
    copy = tmp_path / "other.pt"
    copy.write_bytes(b"other weights")
    preset = dataclasses.replace(MODELS["demo-fmnist"].preset, checkpoint=str(copy))
    monkeypatch.setitem(MODELS, "demo-fmnist", dataclasses.replace(MODELS["demo-fmnist"], preset=preset))
    assert cell_key(plan, cell) != first


@pytest.mark.slow
def test_a_cell_with_several_processes_extracts_under_torchrun_to_the_same_stores(tmp_path, fmnist_env):
    """--procs-per-cell 2: the cell's extraction runs as two torchrun ranks (CPU processes here,
    one per GPU on a cluster); its store and its line equal a one-process cell's."""
    from extract.store.schema import FeatureStore

    logs: list[str] = []
    keys = ("point", "linear", "knn", "key")
    base = config(tmp_path / "one", models=(TINY,), datasets=(DIGITS,))
    one = run_matrix(base, echo=lambda _: None)
    plan = dataclasses.replace(
        base.plan, out=tmp_path / "two" / "out", stores=tmp_path / "two" / "stores", procs=2
    )
    two = run_matrix(dataclasses.replace(base, plan=plan), echo=logs.append)
    assert two.failed == [] and [{k: x[k] for k in keys} for x in two.lines] == [
        {k: x[k] for k in keys} for x in one.lines
    ]
    log = (tmp_path / "two" / "out" / "logs").glob("*.log")
    assert any("torchrun --nproc-per-node 2" in p.read_text() for p in log)
    stores = {p.name: p for p in (tmp_path / "two" / "stores").glob("*.zarr")}
    assert stores
    for name, path in stores.items():
        a, b = FeatureStore.open(path), FeatureStore.open(tmp_path / "one" / "stores" / name)
        for key in a.keys():
            assert (a.array(key)[:] == b.array(key)[:]).all(), (name, key)
    with pytest.raises(ValueError, match="at least 1"):
        dataclasses.replace(plan, procs=0)
