"""The user's three commands chain: `make extract T=.. B=.. POOL=..` records its stores, and a
bare `make probe` / `make cka` works on them. Checked with DRY=1 (the experiment runner prints
the commands it would run, as `diffprobe STAGE ...`). Every test that runs make is slow."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# make runs in a child process; its Python is the one running the tests (PY=), so no .venv is needed
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("make") is None, reason="needs GNU make on PATH: these tests run the Makefile"
    ),
]


def make(*args, out: Path, dry: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            *args,
            f"OUT={out}",
            f"PY={sys.executable}",
            "VENV_STAMP=",
            *(["DRY=1"] if dry else []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def dry(*args, out: Path) -> str:
    done = make(*args, out=out)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def record(out: Path, **values) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = dict(
        model="demo-fmnist",
        ckpt="",
        random="",
        data="fashion-mnist",
        data_root="",
        splits="train test",
        t="150",
        b="24",
        pool="2",
        limit="",
    )
    base.update(values)
    (out / "last-extract.json").write_text(json.dumps(base))


def probe_stores(text: str) -> tuple[str, str]:
    line = next(line for line in text.splitlines() if "diffprobe probe train" in line)
    return re.search(r"--train (\S+)", line).group(1), re.search(r"--test (\S+)", line).group(1)


@pytest.mark.slow
def test_defaults_are_the_papers_coordinates(tmp_path):
    text = dry("extract", out=tmp_path)
    runs = [line for line in text.splitlines() if "diffprobe extract run" in line and "--plan" not in line]
    assert len(runs) == 2 and all("-t 150 -b 24 --pool 2" in r for r in runs)
    assert "--split train" in runs[0] and "--split test" in runs[1]
    plans = [
        line for line in text.splitlines() if line.startswith("plan ")
    ]  # a dry run prints each store's cost
    assert len(plans) == 2 and "10,000 rows (" in plans[1] and "U-Net" in plans[1]
    assert not (tmp_path / "last-extract.json").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_extract_records_what_probe_then_reads(tmp_path):
    from diffprobe.experiments.registry import get_experiment
    from diffprobe.experiments.steps import Record

    spec = get_experiment("extract")
    settings = spec.settings({"t": "50", "b": "19,24", "pool": "1", "limit": "500", "out": str(tmp_path)})
    (record,) = [step for step in spec.steps(settings) if isinstance(step, Record)]
    record.run(lambda text: None)
    saved = json.loads((tmp_path / "last-extract.json").read_text())
    assert saved["t"] == "50" and saved["b"] == "19,24" and saved["pool"] == "1" and saved["limit"] == "500"
    train, test = probe_stores(dry("probe", "HEAD=linear", out=tmp_path))
    assert train == f"{tmp_path}/demo-fmnist_fashion-mnist_train_t50_b19-24_p1_n500.zarr"
    assert test == f"{tmp_path}/demo-fmnist_fashion-mnist_test_t50_b19-24_p1_n500.zarr"


@pytest.mark.slow
def test_random_1_reaches_the_experiment_though_bash_keeps_its_own_random(tmp_path):
    runs = [
        line
        for line in dry("extract", "RANDOM=1", "LIMIT=10", out=tmp_path).splitlines()
        if "diffprobe extract run" in line
    ]
    assert runs and all("--random-init" in r and "demo-fmnist-random_" in r for r in runs)
    assert not [
        line for line in dry("extract", "LIMIT=10", out=tmp_path).splitlines() if "--random-init" in line
    ]


@pytest.mark.slow
def test_explicit_variables_win_over_the_record(tmp_path):
    record(tmp_path, t="50", b="19", pool="1")
    train, _ = probe_stores(dry("probe", "T=300", out=tmp_path))
    assert train == f"{tmp_path}/demo-fmnist_fashion-mnist_train_t300_b19_p1.zarr"


@pytest.mark.slow
def test_without_a_record_probe_uses_the_defaults_and_names_the_extract_to_run(tmp_path):
    train, _ = probe_stores(dry("probe", out=tmp_path))
    assert train.endswith("demo-fmnist_fashion-mnist_train_t150_b24_p2.zarr")
    done = make("probe", out=tmp_path, dry=False)
    assert done.returncode != 0 and "run 'make extract T=150 B=24 POOL=2' first" in done.stdout


@pytest.mark.slow
def test_probe_takes_each_heads_defaults_from_the_recipe(tmp_path):
    line = next(
        x for x in dry("probe", "HEAD=attention", out=tmp_path).splitlines() if "diffprobe probe train" in x
    )
    assert "--head attention --recipe diffprobe" in line and "--lr" not in line
    line = next(x for x in dry("probe", "LR=0.1", out=tmp_path).splitlines() if "diffprobe probe train" in x)
    assert "--lr 0.1" in line


@pytest.mark.slow
def test_cka_uses_the_recorded_model_and_coordinates(tmp_path):
    record(tmp_path, t="90,150", b="24", pool="1", limit="300")
    text = dry("cka", out=tmp_path)
    runs = [line for line in text.splitlines() if "diffprobe extract run" in line and "--plan" not in line]
    assert len(runs) == 3
    assert "-t 90 -b all --pool 1" in runs[0] and "--limit 300" in runs[0] and "--split test" in runs[0]
    assert "-b 24 --pool 1" in runs[1] and "-t 10,25,50" in runs[1] and runs[1].count(",90") == 1
    assert "--random-init" in runs[2] and "-t 90 -b all --pool 1" in runs[2]
    assert text.count("diffprobe analysis cka") == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "row,extract_args,probe_args",
    [
        ("linear-p2", "-t 150 -b 24 --pool 2", "--recipe paper --head linear"),
        ("attention", "-t 150 -b 24 --pool full", "--recipe paper --head paper-attention"),
        (
            "fusion",
            "-t 90,150,300 -b 19,24,30 --pool full --block-pool 30:max16",
            "--head paper-fusion --features all",
        ),
    ],
)
def test_make_paper_prints_the_extraction_and_the_probe_of_a_row(tmp_path, row, extract_args, probe_args):
    text = dry("paper", f"ROW={row}", out=tmp_path)
    assert extract_args in text and probe_args in text
    assert not (tmp_path / "last-extract.json").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_a_rows_views_and_their_use_are_settings(tmp_path):
    one = dry("paper", "ROW=linear-p2", "VIEWS=1", "AUG=none", out=tmp_path)
    assert "--views 1 --aug none --out" in one and "_v1" not in one and "_v8" not in one
    mean = dry("paper", "ROW=linear-p2", "VIEWS_MODE=mean", out=tmp_path)
    assert "--views 8 --aug gd-crop-flip" in mean and "--views mean" in mean


@pytest.mark.slow
@pytest.mark.parametrize(
    "row, data, train, test",
    [
        ("fgvc-aircraft", "aircraft", "trainval", "test"),
        ("fgvc-flowers", "flowers", "trainval", "test"),
        ("fgvc-cub", "cub", "train", "test"),
        ("fgvc-nabirds", "nabirds", "train", "test"),
    ],
)
def test_fgvc_rows_fix_their_dataset_and_official_splits(tmp_path, row, data, train, test):
    text = dry("paper", f"ROW={row}", "DATA_ROOT=/data/fgvc", out=tmp_path)
    assert f"--data {data} --data-root /data/fgvc --split {train}" in text and f"--split {test}" in text
    # diffssl's training as a cache: 8 augmented views of the training split in fp16, rows shuffled;
    # one centre view of test
    train_store = f"{tmp_path}/demo-fmnist_{data}_{train}_t150_b24_pfull_v8-gd-crop-flip_fp16_shuffled.zarr"
    test_store = f"{tmp_path}/demo-fmnist_{data}_{test}_t150_b24_pfull_fp16_shuffled.zarr"
    assert f"--order shuffled --dtype fp16 --views 8 --aug gd-crop-flip --out {train_store}" in text
    assert f"--train {train_store} --test {test_store}" in text
    assert "--recipe paper --head paper-attention" in text and f"--name paper-{row}" in text


@pytest.mark.slow
def test_make_paper_refuses_an_unknown_row(tmp_path):
    done = make("paper", "ROW=gan", out=tmp_path)
    assert (
        done.returncode != 0
        and "unknown ROW=gan: choose one of linear-p1 linear-p2 mlp attention fusion"
        in done.stdout + done.stderr
    )


@pytest.mark.slow
def test_help_lists_the_targets_at_any_time():
    done = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True)
    names = re.findall(r"^  make (\S+)", done.stdout, re.M)
    assert done.returncode == 0 and {"extract", "probe", "cka", "demo", "paper", "test", "bench"} <= set(
        names
    )
    assert "Makefile" not in names


def test_the_makefile_is_a_short_menu():
    lines = (ROOT / "Makefile").read_text().splitlines()
    assert len(lines) <= 150
    assert not [line for line in lines if "foreach" in line or "eval" in line]


def test_an_unknown_variable_for_an_experiment_is_refused():
    from diffprobe.experiments.registry import get_experiment

    with pytest.raises(ValueError, match="no setting sweep_n"):
        get_experiment("extract").settings({"sweep_n": "10"})


@pytest.mark.slow
@pytest.mark.parametrize("sets", [("aircraft", "cub", "dogs"), ("cars", "flowers", "nabirds")])
def test_fgvc_rows_run_end_to_end_on_tiny_trees_in_each_official_layout(tmp_path, sets):
    """The FGVC rows through make, on trees of a few images per split written by the test (so
    the batch is lowered to fit them; on the real sets the row's own batch of 128 applies)."""
    from tests.extract.fake_datasets import BUILDERS

    for name in sets:
        BUILDERS[name](tmp_path / "data")
        done = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "paper",
                f"ROW=fgvc-{name}",
                f"DATA_ROOT={tmp_path / 'data'}",
                f"OUT={tmp_path / 'cache'}",
                f"PY={sys.executable}",
                "VENV_STAMP=",
                f"PAPER_ARGS=--epochs 1 --batch-size 2 --no-progress --results {tmp_path / 'results'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (name, done.stdout[-2000:], done.stderr[-2000:], sys.executable)
        assert (tmp_path / "results" / f"paper-fgvc-{name}.json").is_file()
