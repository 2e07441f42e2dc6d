"""The TOML experiment runner, for the experiments not yet written in Python
(diffprobe/experiments has the others, tested in tests/diffprobe): the placeholders, and every
TOML experiment resolving and printing without error."""

from __future__ import annotations

import json
import shutil

import pytest

from extract.experiments.runner import Runner, Settings, each_binding, experiment_names, resolve, store_path


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path, monkeypatch):
    """Steps are skipped when their output exists under the working folder: start each test
    from an empty one."""
    monkeypatch.chdir(tmp_path)


class Recorder(Runner):
    """A dry runner that runs nothing, not even the read-only plans: it records what it would print."""

    def __init__(self):
        super().__init__(dry=True, python="python")
        self.lines, self.planned = [], []
        self.echo = lambda *a, **k: self.lines.append(" ".join(map(str, a)))

    def command(self, line: str, always: bool = False) -> None:
        (self.planned if always else self.lines).append(f"python -m {line}")


def printed(name, given=None, row=None) -> list[str]:
    r = Recorder()
    r.run(name, given or {}, row)
    return r.lines


def test_store_paths_are_named_by_one_function():
    assert (
        store_path("cache", "demo-fmnist", False, "fashion-mnist", "train", "10,150", "24", "2,full", "500")
        == "cache/demo-fmnist_fashion-mnist_train_t10-150_b24_p2-full_n500.zarr"
    )
    assert store_path("c", "m", True, "d", "test", "1", "all", "1").endswith(
        "c/m-random_d_test_t1_ball_p1.zarr"
    )


def test_placeholders():
    s = Settings(
        {
            "t": "10,50",
            "b": "all",
            "pool": "full",
            "limit": "",
            "lr": "0.1",
            "ckpt": "",
            "random": "1",
            "splits": "train val",
            "out": "o",
            "store_out": "{out}/x",
            "model": "m",
            "data": "d",
            "split": "",
            "a": "{b}",
            "loop": "{loop}",
        }
    )
    assert s.format("{first:t} {block:b} {tag:t} {union:t:t}") == "10 24 10-50 10,50"
    assert (
        s.format("{opt:lr:--lr}|{opt:limit:--limit}|{opt:lr: LR=}|{if:random:_r}|{weights}|{testsplit}")
        == "--lr 0.1|| LR=0.1|_r|--random-init|val"
    )
    assert s.format("{store:#1}") == "o/x/m-random_d_val_t10-50_ball_pfull.zarr"
    assert s.format("{store:split=train,t=7,random=,limit=9}") == "o/x/m_d_train_t7_ball_pfull_n9.zarr"
    assert s.format("{features:full}") == "t10/ball/full+t50/ball/full" and s.format("{a}") == "all"
    for bad, message in (
        ("{nope}", "unknown setting 'nope'"),
        ("{store:#2}", "give a training and a test split"),
        ("{loop}", "refer to each other in a loop"),
        ("{store:colour=red}", "unknown part colour"),
    ):
        with pytest.raises(ValueError, match=message):
            s.format(bad)


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_prints_its_commands(name):
    rows = resolve(name, {})[0].get("rows", {})
    for row in rows or [None]:
        lines = printed(name, {}, row)
        assert any(" -m " in x for x in lines), (name, row)
        literal = lambda x: x.replace("{head}", "").replace("{row}", "")  # noqa: E731 - the patterns `analysis table` fills in itself
        assert not [x for x in lines if "{" in literal(x) or "}" in literal(x)], (
            name,
            row,
            lines,
        )  # every placeholder filled


def test_unless_exists_skips_and_record_writes(tmp_path, fmnist_env):
    from extract.models.pixels import PixelConfig, extract_pixels
    from extract.store.config import from_flat

    r = Runner(dry=False)
    r.echo = lambda *a, **k: None
    _, s = resolve(experiment_names()[0], {"out": str(tmp_path), "t": "5"})
    r.write_record(s)
    assert json.loads((tmp_path / "last-extract.json").read_text())["t"] == "5"
    step = {"each": "split", "unless_exists": "{pixels:split}", "run": "extract pixels --split {split}"}
    (
        tmp_path / "pixels_fashion-mnist_train.zarr"
    ).mkdir()  # there, but not a finished store: its step runs again (and resumes)
    rec = Recorder()
    rec.step(step, s, {})
    assert rec.lines == ["python -m extract pixels --split train", "python -m extract pixels --split test"]
    shutil.rmtree(tmp_path / "pixels_fashion-mnist_train.zarr")
    extract_pixels(
        from_flat(
            PixelConfig,
            out=tmp_path / "pixels_fashion-mnist_train.zarr",
            split="train",
            limit=4,
            progress=False,
        )
    )
    rec = Recorder()
    rec.step(step, s, {})
    assert rec.lines == ["python -m extract pixels --split test"]
    (tmp_path / "notes.txt").write_text("")  # any other output counts once it exists
    rec = Recorder()
    rec.step({"unless_exists": str(tmp_path / "notes.txt"), "run": "analysis x"}, s, {})
    assert rec.lines == []


def test_each_repeats_a_step_over_any_list_setting_and_their_combinations():
    s = Settings(
        {"splits": "train test", "split": "", "seeds": "0, 1,2", "seed": "", "heads": "linear", "head": ""}
    )
    assert each_binding("split", s) == [{"split": "train"}, {"split": "test"}]
    assert each_binding([], s) == [{}]
    assert each_binding(["seed", "split"], s) == [
        {"seed": a, "split": b} for a in "012" for b in ("train", "test")
    ]  # the last varies fastest
    with pytest.raises(ValueError, match="no settings 'colour' and 'colours'"):
        each_binding("colour", s)
    with pytest.raises(ValueError, match="'seeds' is empty"):
        each_binding("seed", Settings({**s.values, "seeds": " "}))


def test_each_pairs_names_joined_by_plus_item_by_item():
    s = Settings(
        {
            "seeds": "0,1,2",
            "seed": "",
            "head_seeds": "5 6 7",
            "head_seed": "",
            "heads": "linear,attention",
            "head": "",
        }
    )
    assert each_binding("seed+head_seed", s) == [
        {"seed": "0", "head_seed": "5"},
        {"seed": "1", "head_seed": "6"},
        {"seed": "2", "head_seed": "7"},
    ]
    paired = each_binding(["head", "seed+head_seed"], s)
    assert len(paired) == 6 and paired[3] == {"head": "attention", "seed": "0", "head_seed": "5"}
    with pytest.raises(ValueError, match="must be as many: 'seeds' has 3, 'head_seeds' has 2"):
        each_binding("seed+head_seed", Settings({**s.values, "head_seeds": "5,6"}))
    with pytest.raises(ValueError, match="no settings 'colour'"):
        each_binding("seed+colour", s)


def test_seeded_store_paths_literal_braces_and_only_if(tmp_path):
    assert (
        store_path("c", "m", False, "d", "test", "1", "2", "1", seed="0") == "c/m_d_test_t1_b2_p1.zarr"
    )  # seed 0 is the default store
    assert (
        store_path("c", "m", True, "d", "test", "1", "2", "1", "50", seed="2")
        == "c/m-random_d_test_t1_b2_p1_n50_s2.zarr"
    )
    s = Settings({"a": "x", "b": "{a}"})
    assert s.format("{{a}}-{b}-{{head}}") == "{a}-x-{head}"
    assert Settings({"f": "runs/x/snapshots/ema-step1000.pt"}).format("{stem:f}") == "ema-step1000"
    labelled = Settings(
        {"f": "ema-step5000=runs/s3/snapshots/ema-step1000.pt", "g": "runs/s2/snapshots/ema-step1000.pt"}
    )
    assert (
        labelled.format("{label:f} {path:f} {label:g} {path:g}")
        == "ema-step5000 runs/s3/snapshots/ema-step1000.pt ema-step1000 runs/s2/snapshots/ema-step1000.pt"
    )
    _, settings = resolve(experiment_names()[0], {"out": str(tmp_path)})
    rec = Recorder()
    step = {"only_if": str(tmp_path / "w.pt"), "only_if_hint": "no weights at {only}", "run": "extract run"}
    with pytest.raises(ValueError, match="unknown setting 'only'"):
        rec.step(step, settings, {})
    step["only_if_hint"] = "no weights"
    rec.step(step, settings, {})
    (tmp_path / "w.pt").write_text("")
    rec.step(step, settings, {})
    assert rec.lines == ["no weights", "python -m extract run"]
