"""`python -m probe`: train, eval, one-line errors, and a two-process torchrun run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from extract.store.schema import FeatureKey
from probe.cli import main

KEY = FeatureKey(10, 7, 2)


def cli(args, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_train_then_eval_reproduces_the_test_accuracy(stores, capsys):
    res = stores / "res"
    code, out, err = cli(["train", "--train", str(stores / "train.zarr"), "--test", str(stores / "test.zarr"), "--lr", "1e-3,1e-2",
                          "--epochs", "4", "--batch-size", "32", "--results", str(res), "--name", "lin", "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    assert "* linear t10/b7/p2" in out and "selected (*) by validation" in out
    saved = json.loads((res / "lin.json").read_text())
    code, out, err = cli(["eval", "--head", str(res / "lin.head.pt"), "--store", str(stores / "test.zarr"), "--out", str(res / "ev.json")], capsys)
    assert code == 0, err
    assert f"top-1 {saved['test']['top1']:.2f}" in out
    assert json.loads((res / "ev.json").read_text())["confusion"] == saved["test"]["confusion"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--train", "nowhere.zarr"], "error: store not found: nowhere.zarr"),
        (["train", "--train", "{train}", "--features", "t10/b9/p2"], "has no features for t10/b9/p2; it holds: t10/b7/p2"),
        (["train", "--train", "{train}", "--features", "block7"], "error: feature 'block7': expected tT/bB/pP or tT/bB/full"),
        (["train", "--train", "{train}", "--head-opt", "width=64"], "error: head option(s) width apply to none of the heads linear"),
        (["eval", "--head", "{train}", "--store", "{train}"], "error: head file not found"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(stores, capsys, args, message):
    args = [a.format(train=stores / "train.zarr") for a in args]
    code, _, err = cli(args + (["--results", str(stores / "r"), "--no-progress"] if args[0] == "train" else []), capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_two_process_torchrun_trains_heads_with_ddp(stores):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "probe", "train",
           "--train", str(stores / "train.zarr"), "--test", str(stores / "test.zarr"), "--head", "linear", "--head", "mlp",
           "--head-opt", "hidden=32", "--lr", "1e-2", "--wd", "0", "--epochs", "4", "--batch-size", "32", "--buffer-mb", "1",
           "--results", str(stores / "ddp"), "--name", "ddp", "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((stores / "ddp" / "ddp.json").read_text())
    assert result["test"]["top1"] >= 90 and len(result["members"]) == 2
    samples = result["timing"]["train"]["samples"]  # rank 0's share: half of 4 epochs of 288 rows, in batches of 16
    assert samples % 16 == 0 and 0.75 * 4 * 144 <= samples <= 4 * 144
