"""The user's three commands chain: `make extract T=.. B=.. POOL=..` records its stores, and a
bare `make probe` / `make cka` works on them. Checked with `make -n` (what would run)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry(*args, out: Path) -> str:
    done = subprocess.run(["make", "-n", "--no-print-directory", *args, f"OUT={out}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def record(out: Path, **values) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = dict(MODEL="demo-fmnist", CKPT="", RANDOM="", DATA="fashion-mnist", DATA_ROOT="", SPLITS="train test", T="150", B="24", POOL="2", LIMIT="")
    base.update(values)
    (out / "last-extract.mk").write_text("".join(f"LAST_{k} := {v}\n" for k, v in base.items()))


def probe_stores(text: str) -> tuple[str, str]:
    line = next(line for line in text.splitlines() if "-m probe train" in line)
    return re.search(r'--train "([^"]+)"', line).group(1), re.search(r'--test "([^"]+)"', line).group(1)


def test_defaults_are_the_papers_coordinates(tmp_path):
    text = dry("extract", out=tmp_path)
    assert "-t 150 -b 24 --pool 2" in text
    assert text.count("-m extract run") == 1 and "for split in train test" in text


def test_extract_writes_the_record_that_probe_reads(tmp_path):
    text = dry("extract", "T=50", "B=19,24", "POOL=1", out=tmp_path)
    assert "LAST_T := 50" in text and "LAST_B := 19,24" in text and "LAST_POOL := 1" in text
    record(tmp_path, T="50", B="19,24", POOL="1", LIMIT="500")
    train, test = probe_stores(dry("probe", "HEAD=linear", out=tmp_path))
    assert train == f"{tmp_path}/demo-fmnist_fashion-mnist_train_t50_b19-24_p1_n500.zarr"
    assert test == f"{tmp_path}/demo-fmnist_fashion-mnist_test_t50_b19-24_p1_n500.zarr"


def test_explicit_variables_win_over_the_record(tmp_path):
    record(tmp_path, T="50", B="19", POOL="1")
    train, _ = probe_stores(dry("probe", "T=300", out=tmp_path))
    assert train == f"{tmp_path}/demo-fmnist_fashion-mnist_train_t300_b19_p1.zarr"


def test_without_a_record_probe_uses_the_defaults_and_names_the_extract_to_run(tmp_path):
    train, _ = probe_stores(dry("probe", out=tmp_path))
    assert train.endswith("demo-fmnist_fashion-mnist_train_t150_b24_p2.zarr")
    done = subprocess.run(["make", "--no-print-directory", "probe", f"OUT={tmp_path}", "PY=true", "VENV_STAMP="], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "run 'make extract T=150 B=24 POOL=2' first" in done.stdout


def test_cka_uses_the_recorded_model_and_coordinates(tmp_path):
    record(tmp_path, T="90,150", B="24", POOL="4", LIMIT="300")
    text = dry("cka", out=tmp_path)
    runs = [line for line in text.splitlines() if "-m extract run" in line]
    assert len(runs) == 3
    assert "-t 90 -b all --pool 1" in runs[0] and "--limit 300" in runs[0] and "--split test" in runs[0]
    assert "-b 24 --pool 4" in runs[1] and "-t 10,25,50" in runs[1]
    assert "--random-init -t 90 -b all --pool 1" in runs[2]
    assert text.count("-m analysis cka") == 3


@pytest.mark.parametrize("row,extract_args,probe_args", [
    ("linear-p2", "-t 150 -b 24 --pool 2", "--recipe paper --head linear"),
    ("attention", "-t 150 -b 24 --pool full", "--recipe paper --head paper-attention"),
    ("fusion", "-t 90,150,300 -b 19,24,30 --pool full", "--head paper-fusion --features t90/b19/full+t90/b24/full+t90/b30/full+t150/b19/full"),
])
def test_make_paper_prints_the_extraction_and_the_probe_of_a_row(tmp_path, row, extract_args, probe_args):
    done = subprocess.run(["make", "--no-print-directory", "paper", f"ROW={row}", "DRY=1", f"OUT={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert extract_args in done.stdout and probe_args in done.stdout
    assert not (tmp_path / "last-extract.mk").exists()  # a dry run writes nothing


@pytest.mark.parametrize("row, data, train, test", [("fgvc-aircraft", "aircraft", "trainval", "test"), ("fgvc-flowers", "flowers", "trainval", "test"),
                                                     ("fgvc-cub", "cub", "train", "test"), ("fgvc-nabirds", "nabirds", "train", "test")])
def test_fgvc_rows_fix_their_dataset_and_official_splits(tmp_path, row, data, train, test):
    done = subprocess.run(["make", "--no-print-directory", "paper", f"ROW={row}", "DRY=1", "DATA_ROOT=/data/fgvc", f"OUT={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"--data {data} --data-root /data/fgvc" in done.stdout and "for split in " + f"{train} {test}" in done.stdout
    assert f"--train {tmp_path}/demo-fmnist_{data}_{train}_t150_b24_pfull.zarr --test {tmp_path}/demo-fmnist_{data}_{test}_t150_b24_pfull.zarr" in done.stdout
    assert "--recipe paper --head paper-attention" in done.stdout and f"--name paper-{row}" in done.stdout


def test_make_paper_refuses_an_unknown_row(tmp_path):
    done = subprocess.run(["make", "--no-print-directory", "paper", "ROW=gan", f"OUT={tmp_path}", "VENV_STAMP="], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "unknown ROW=gan: choose one of linear-p1 linear-p2 mlp attention fusion" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sets", [("aircraft", "cub", "dogs"), ("cars", "flowers", "nabirds")])
def test_fgvc_rows_run_end_to_end_on_tiny_trees_in_each_official_layout(tmp_path, sets):
    """The FGVC rows through make, on trees of a few images per split written by the test (so
    the batch is lowered to fit them; on the real sets the row's own batch of 128 applies)."""
    import sys

    from tests.extract.fake_datasets import BUILDERS

    if not Path(ROOT / ".venv/bin/python").exists():
        pytest.skip("needs the project's .venv (make test creates it)")
    for name in sets:
        BUILDERS[name](tmp_path / "data")
        done = subprocess.run(["make", "--no-print-directory", "paper", f"ROW=fgvc-{name}", f"DATA_ROOT={tmp_path / 'data'}", f"OUT={tmp_path / 'cache'}",
                               "VENV_STAMP=", f"PAPER_ARGS=--epochs 1 --batch-size 2 --no-progress --results {tmp_path / 'results'}"],
                              cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, (name, done.stdout[-2000:], done.stderr[-2000:], sys.executable)
        assert (tmp_path / "results" / f"paper-fgvc-{name}.json").is_file()
