"""Experiments as Python: settings typed from flat TOML, one store name per config, steps built
before any runs, and the dry runs of the ported experiments equal to the old runner's."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from diffprobe.experiments import registry
from diffprobe.experiments.builders import extraction
from diffprobe.experiments.registry import Experiment, get_experiment, run_experiment
from diffprobe.experiments.settings import (
    Settings,
    defaults,
    from_environment,
    parse_sets,
    record_values,
    resolve,
)
from diffprobe.experiments.steps import Extract, Need, Record, Say
from diffprobe.experiments.stores import pixel_path, store_name
from tests.diffprobe import parity


def dry(name: str, row: str | None = None, **given: str) -> list[str]:
    spec, lines = get_experiment(name), []
    run_experiment(spec, spec.settings(given, row), dry=True, out=lines.append)
    return lines


def test_settings_toml_holds_every_setting_typed():
    s = defaults()
    assert (s.t, s.b, s.pool, s.splits) == ((150,), ("24",), ("2",), ("train", "test"))
    assert s.limit is None and s.random is False and s.out == Path("cache") and s.sample_n == 64


def test_user_values_are_parsed_and_a_mistake_is_one_line_naming_it():
    s = resolve({}, {"t": "10, 50", "limit": "32", "random": "1", "lr": "1e-3,0.01"})
    assert (s.t, s.limit, s.random, s.lr) == ((10, 50), 32, True, (1e-3, 0.01))
    with pytest.raises(ValueError, match=r"^LIMIT=many: expected an integer$"):
        resolve({}, {"limit": "many"})
    with pytest.raises(ValueError, match=r"^DTYPE=fp8: choose one of fp32 bf16 fp16$"):
        resolve({}, {"dtype": "fp8"})
    with pytest.raises(ValueError, match=r"^RANDOM=maybe"):
        resolve({}, {"random": "maybe"})
    with pytest.raises(ValueError, match=r"^no setting sweep_n; the settings are: model, ckpt"):
        resolve({}, {"sweep_n": "3"})
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_sets(["t"])


def test_rows_and_an_experiments_own_settings_resolve_in_order():
    table = get_experiment("paper").table
    s = resolve(table, {"t": "300", "views": "2"}, "fusion")
    assert (s.t, s.b, s.views, s.head, s.row) == (
        (90, 150, 300),
        ("19", "24", "30"),
        2,
        "paper-fusion",
        "fusion",
    )
    assert resolve(table, {}).row == "linear-p2"  # the default row
    assert resolve(table, {"row": "mlp"}).head == "paper-mlp"
    with pytest.raises(
        ValueError, match=r"^unknown ROW=gan: choose one of linear-p1 linear-p2 mlp attention"
    ):
        resolve(table, {}, "gan")
    with pytest.raises(ValueError, match="this experiment has no rows"):
        get_experiment("extract").settings({}, "fusion")
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; choose one of: .*cka, demo"):
        get_experiment("nope")


def test_the_record_is_read_below_the_users_values(tmp_path):
    written = record_values(resolve({}, {"t": "50", "b": "19,24", "limit": "500", "splits": "a b"}))
    assert (
        written["t"] == "50"
        and written["b"] == "19,24"
        and written["splits"] == "a b"
        and written["ckpt"] == ""
    )
    (tmp_path / "last-extract.json").write_text(json.dumps(written))
    s = resolve({}, {"out": str(tmp_path), "pool": "4"}, reads_record=True)
    assert (s.t, s.b, s.limit, s.splits, s.pool) == ((50,), ("19", "24"), 500, ("a", "b"), ("4",))
    assert resolve({}, {"out": str(tmp_path)}).t == (150,)  # an experiment that reads no record


def test_one_function_names_a_store_from_its_config():
    s = resolve({}, {"out": "c"})
    assert store_name(extraction(s, "train").cfg) == "demo-fmnist_fashion-mnist_train_t150_b24_p2.zarr"
    s = resolve(
        {},
        {"t": "10,50", "b": "all", "pool": "2,full", "limit": "7", "random": "1", "views": "4"}
        | {"aug": "crop-flip", "dtype": "bf16", "order": "shuffled", "seed": "3", "block_pools": "30:max16"},
    )
    train, test = (extraction(s, split).cfg for split in s.splits)
    common = "demo-fmnist-random_fashion-mnist_{}_t10-50_ball_p2-full_n7_bp30-max16"
    assert store_name(train) == common.format("train") + "_v4-crop-flip_bf16_shuffled_s3.zarr"
    assert (
        store_name(test)
        == "demo-fmnist-random_fashion-mnist_test_t10-50_ball_p2-full_n7_bp30-max16_bf16_shuffled_s3.zarr"
    )
    assert pixel_path(Path("c"), "cifar10", "test", 5) == Path("c/pixels_cifar10_test_n5.zarr")


def test_an_extraction_step_holds_the_config_its_command_line_builds():
    step = extraction(resolve({}, {"out": "c", "limit": "9", "args": "--micro-batch 8"}), "test")
    assert isinstance(step, Extract) and step.cfg.selection.limit == 9 and step.cfg.micro_batch == 8
    assert step.cfg.store.out == Path("c/demo-fmnist_fashion-mnist_test_t150_b24_p2_n9.zarr")
    assert step.argv[step.argv.index("--out") + 1] == str(step.cfg.store.out)
    with pytest.raises(ValueError, match="--micro-batch"):
        extraction(resolve({}, {"args": "--micro-batch zero"}), "test")


@dataclass(frozen=True)
class WithCount(Settings):
    count: int


def test_an_experiment_may_add_its_own_settings_with_defaults_in_its_table():
    spec = Experiment("counted", lambda s: iter([Say(f"{s.count} {s.t}")]), cls=WithCount)
    table = {"settings": {"count": 3}}
    assert resolve(table, {}, cls=WithCount).count == 3
    s = resolve(table, {"count": "4"}, cls=WithCount)
    assert isinstance(s, WithCount) and s.count == 4 and s.t == (150,)
    assert from_environment({"COUNT": "5", "T": "7", "PATH": "/bin"}, WithCount) == {"t": "7", "count": "5"}
    with pytest.raises(ValueError, match="COUNT=x: expected an integer"):
        resolve(table, {"count": "x"}, cls=WithCount)
    shown: list[str] = []
    run_experiment(spec, s, dry=True, out=shown.append)
    assert shown == ["4 (150,)"]


def test_every_step_is_built_before_the_first_runs(monkeypatch):
    def broken(s):
        yield Say("first")
        yield extraction(replace(s, args="--no-such-option"), "train")

    spec = Experiment("broken", broken)
    shown: list[str] = []
    with pytest.raises(ValueError, match="no-such-option"):
        run_experiment(spec, defaults(), dry=False, out=shown.append)
    assert shown == []


def test_need_stops_a_run_and_record_writes_only_when_run(tmp_path):
    shown: list[str] = []
    Need(tmp_path / "x.zarr", "no cache").show(shown.append)
    with pytest.raises(SystemExit):
        Need(tmp_path / "x.zarr", "no cache: run make extract").run(shown.append)
    record = Record(tmp_path / "r" / "last-extract.json", {"t": "10"})
    record.show(shown.append)
    assert not record.path.exists()
    record.run(shown.append)
    assert json.loads(record.path.read_text()) == {"t": "10"} and shown[0] == "no cache: run make extract"


@pytest.mark.slow  # trains or runs a whole experiment (over 9 s)
def test_the_demo_skips_pixel_stores_already_made(tmp_path, monkeypatch):
    monkeypatch.setattr("diffprobe.experiments.core.made", lambda path: "train" in str(path))
    lines = dry("demo", out=str(tmp_path))
    assert [line for line in lines if "extract pixels" in line] == [
        "diffprobe extract pixels --data fashion-mnist --split test"
        f" --out {tmp_path}/pixels_fashion-mnist_test.zarr"
    ]


def test_every_experiment_is_registered_with_a_description():
    names = set(registry.EXPERIMENTS) | {name for name in ("extract", "paper") if get_experiment(name)}
    assert {"extract", "probe", "cka", "demo", "report", "sample", "finetune", "paper"} <= names
    assert all(spec.description for spec in registry.EXPERIMENTS.values())


@pytest.mark.parametrize(
    "case",
    parity.cases(),
    ids=lambda c: f"{c['name']}-{c['row'] or ''}-{len(c['sets'])}-{len(c.get('files', []))}",
)
def test_dry_runs_print_what_the_old_runner_printed(case, tmp_path, monkeypatch):
    """Command for command against the old runner's lines, recorded in parity/NAME.json (plans are
    left out here: their row counts depend on which data this machine has)."""
    monkeypatch.chdir(tmp_path)  # OUT is relative: no record there
    if case.get("at_root"):  # recorded at the repository's root: the shipped weights and evidence there
        for shipped in ("extract", "evidence"):
            (tmp_path / shipped).symlink_to(parity.ROOT / shipped)
    parity.make_files(tmp_path, case.get("files", []))
    new = parity.without_rows_added_since(
        parity.new_lines(case["name"], case["row"], case["sets"], plans=False)
    )
    assert parity.differences(case["lines"], new, plans=False) == []


def test_a_bad_extraction_option_is_named_with_the_command_as_the_user_would_run_it():
    spec = get_experiment("extract")
    with pytest.raises(ValueError, match="No such option '--bogus'") as raised:
        run_experiment(spec, spec.settings({"args": "--bogus", "out": "x"}, None), dry=True, out=print)
    assert "--out ." not in str(raised.value)
