"""`python -m probe`: train, eval, one-line errors, and a two-process torchrun run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    code, out, err = cli(
        [
            "train",
            "--train",
            str(stores / "train.zarr"),
            "--test",
            str(stores / "test.zarr"),
            "--lr",
            "1e-3,1e-2",
            "--epochs",
            "4",
            "--batch-size",
            "32",
            "--results",
            str(res),
            "--name",
            "lin",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "* linear t10/b7/p2" in out and "selected (*) by validation" in out
    saved = json.loads((res / "lin.json").read_text())
    code, out, err = cli(
        [
            "eval",
            "--head",
            str(res / "lin.head.pt"),
            "--store",
            str(stores / "test.zarr"),
            "--out",
            str(res / "ev.json"),
        ],
        capsys,
    )
    assert code == 0, err
    assert f"top-1 {saved['test']['top1']:.2f}" in out
    assert json.loads((res / "ev.json").read_text())["confusion"] == saved["test"]["confusion"]


def test_a_run_off_a_terminal_prints_one_line_per_epoch_and_keeps_its_history(stores, capsys):
    """No bar redraws in a log: one line per epoch; the results file holds the per-epoch history
    (mean train loss, lr factor) and each member's validation curve, ending at its reported score."""
    res = stores / "hist"
    code, out, err = cli(
        [
            "train",
            "--train",
            str(stores / "train.zarr"),
            "--test",
            str(stores / "test.zarr"),
            "--lr",
            "1e-3,1e-2",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--results",
            str(res),
            "--name",
            "h",
        ],
        capsys,
    )
    assert code == 0, err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ] and "\r" not in err
    result = json.loads((res / "h.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3] and all(
        h["train_loss"] > 0 for h in result["history"]
    )
    assert result["history"][0]["lr_factor"] == 1.0
    for m in result["members"]:
        assert len(m["val_top1_by_epoch"]) == 3 and m["val_top1_by_epoch"][-1] == pytest.approx(
            m["val"]["top1"], abs=1e-3
        )
    log = Path(
        result["log_file"]
    )  # the run's timestamped log: arguments, provenance, epoch lines, the final table
    assert log.parent == res and log.name.startswith("h.") and log.suffix == ".log"
    text = log.read_text()
    assert '"lrs": [0.001, 0.01]' in text and "train store key:" in text
    assert all(f"epoch {e}/3: train loss" in text for e in (1, 2, 3)) and "selected (*) by validation" in text


def _same_run(a: dict, b: dict) -> None:
    for field in ("config", "members", "selected", "test", "val", "history"):
        assert a[field] == b[field], field


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_a_config_file_gives_the_same_results_as_its_command_line(stores, capsys, tmp_path, suffix):
    """`--config FILE` (keys spelled as on the command line), the equivalent command line, and a
    rerun from the results file's recorded invocation give the same results; the command line wins."""
    res = tmp_path / "res"
    line = [
        "train",
        "--train",
        str(stores / "train.zarr"),
        "--test",
        str(stores / "test.zarr"),
        "--lr",
        "1e-3,1e-2",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--results",
        str(res),
        "--name",
        "x",
        "--no-progress",
    ]
    assert cli(line, capsys)[0] == 0
    by_line = json.loads((res / "x.json").read_text())
    entries = {
        "train": str(stores / "train.zarr"),
        "test": str(stores / "test.zarr"),
        "lr": [1e-3, 1e-2],
        "epochs": 5,
        "batch-size": 32,
        "results": str(res),
        "name": "y",
        "no-progress": True,
    }
    if suffix == ".toml":
        text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in entries.items())
    else:
        text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in entries.items())
    (tmp_path / f"run{suffix}").write_text(text + "\n")
    code, _, err = cli(
        ["train", "--config", str(tmp_path / f"run{suffix}"), "--epochs", "2"], capsys
    )  # the command line wins: 2 epochs
    assert code == 0, err
    by_file = json.loads((res / "y.json").read_text())
    _same_run(by_line, {**by_file, "config": {**by_file["config"], "name": "x"}})
    assert by_file["invocation"]["options"]["epochs"] == 2 and by_file["invocation"]["command"].endswith(
        "train"
    )
    (res / "y.json").rename(tmp_path / "y-first.json")
    code, _, err = cli(
        ["train", "--config", str(tmp_path / "y-first.json")], capsys
    )  # a results file reruns itself
    assert code == 0, err
    _same_run(by_file, json.loads((res / "y.json").read_text()))


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr = [1e-3]\nepoch = 3\n", "not options of this command: epoch"),
        ("lr = [1e-3", "not a readable TOML file"),
    ],
)
def test_a_bad_config_file_is_one_line(stores, capsys, tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    code, _, err = cli(
        ["train", "--train", str(stores / "train.zarr"), "--config", str(tmp_path / "bad.toml")], capsys
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--train", "nowhere.zarr"], "error: store not found: nowhere.zarr"),
        (
            ["train", "--train", "{train}", "--features", "t10/b9/p2"],
            "has no features for t10/b9/p2; it holds: t10/b7/p2",
        ),
        (
            ["train", "--train", "{train}", "--features", "block7"],
            "error: feature 'block7': expected tT/bB/pP or tT/bB/full",
        ),
        (
            ["train", "--train", "{train}", "--head-opt", "width=64"],
            "error: head option(s) width apply to none of the heads linear",
        ),
        (["eval", "--head", "{train}", "--store", "{train}"], "error: head file not found"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(stores, capsys, args, message):
    args = [a.format(train=stores / "train.zarr") for a in args]
    code, _, err = cli(
        args + (["--results", str(stores / "r"), "--no-progress"] if args[0] == "train" else []), capsys
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_two_process_torchrun_trains_heads_with_ddp(stores):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "probe",
        "train",
        "--train",
        str(stores / "train.zarr"),
        "--test",
        str(stores / "test.zarr"),
        "--head",
        "linear",
        "--head",
        "mlp",
        "--head-opt",
        "hidden=32",
        "--lr",
        "1e-2",
        "--wd",
        "0",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--buffer-mb",
        "1",
        "--results",
        str(stores / "ddp"),
        "--name",
        "ddp",
        "--no-progress",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((stores / "ddp" / "ddp.json").read_text())
    assert result["test"]["top1"] >= 90 and len(result["members"]) == 2
    samples = result["timing"]["train"][
        "samples"
    ]  # rank 0's share: half of 4 epochs of 288 rows, in batches of 16
    assert samples % 16 == 0 and 0.75 * 4 * 144 <= samples <= 4 * 144


def test_probe_finetune_names_a_bad_option_value_in_one_line(tmp_path):
    from click.testing import CliRunner

    from probe.cli import cli as probe_group

    done = CliRunner().invoke(probe_group, ["finetune", "--out", str(tmp_path / "ft"), "--model", "nonsense"])
    assert done.exit_code != 0 and "nonsense" in done.output
    assert not isinstance(done.exception, Exception) or isinstance(done.exception, SystemExit)
