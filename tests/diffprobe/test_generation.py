"""The demo as a generator, over training, and trained: steps that depend on files on disk."""

from __future__ import annotations

import pytest

from diffprobe.experiments.registry import get_experiment, run_experiment


def dry(name: str, **given: str) -> list[str]:
    spec, lines = get_experiment(name), []
    run_experiment(spec, spec.settings(given), dry=True, out=lines.append)
    return lines


def test_the_generation_table_takes_the_bigan_samples_only_when_its_weights_exist(tmp_path):
    given = {"bigan_weights": str(tmp_path / "bigan.pt"), "gen_out": str(tmp_path / "gen")}
    runs = [x for x in dry("demo-gen", **given) if x.startswith("diffprobe ")]
    assert not any("bigan" in x.lower() for x in runs)
    (tmp_path / "bigan.pt").write_bytes(b"")
    (tmp_path / "gen").mkdir()
    runs = [x for x in dry("demo-gen", **given) if x.startswith("diffprobe ")]
    assert sum("extract bigan-sample" in x and "--n 5000" in x for x in runs) == 1
    fake = f"--fake {tmp_path}/gen/samples-bigan --out {tmp_path}/gen/fd-bigan.json"
    assert sum(fake in x for x in runs) == 1
    assert "BiGAN" not in next(x for x in runs if "gen-table" in x)  # no FD file yet
    (tmp_path / "gen" / "fd-bigan.json").write_text("{}")
    table = next(x for x in dry("demo-gen", **given) if "gen-table" in x)
    assert f"--fd BiGAN={tmp_path}/gen/fd-bigan.json" in table


def test_the_generation_table_reads_the_card_runs_probe_table_once_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = next(x for x in dry("demo-gen") if "gen-table" in x)
    assert "--probe-table evidence/demo-card.runs.csv" in table
    (tmp_path / "results" / "card").mkdir(parents=True)
    (tmp_path / "results" / "card" / "probe_results.csv").write_text("")
    table = next(x for x in dry("demo-gen") if "gen-table" in x)
    assert "--probe-table results/card/probe_results.csv" in table
    table = next(x for x in dry("demo-gen", gen_probes="mine.csv") if "gen-table" in x)
    assert "--probe-table mine.csv" in table


@pytest.mark.slow  # trains or runs a whole experiment (over 9 s)
def test_the_demo_curve_labels_each_stages_snapshots_by_steps_after_the_first_stage(tmp_path, monkeypatch):
    # stages 2 and 3 each number their snapshots from 1,000: the labels keep them apart, so no
    # snapshot reuses another's store, results or samples
    monkeypatch.chdir(tmp_path)  # the first stage's weights are looked up under the working folder
    for stage in ("stage2", "stage3"):
        (tmp_path / "run" / stage / "snapshots").mkdir(parents=True)
        (tmp_path / "run" / stage / "snapshots" / "ema-step1000.pt").write_bytes(b"")
    (tmp_path / "evidence" / "demo-continue").mkdir(parents=True)
    (tmp_path / "evidence" / "demo-continue" / "first-stage.pt").write_bytes(b"")
    given = {"curve_run": str(tmp_path / "run"), "curve_dir": str(tmp_path / "c")}
    runs = [x for x in dry("demo-curve", **given) if x.startswith("diffprobe ")]
    extracts = [x for x in runs if "extract run" in x]
    assert len(extracts) == 4 + 2  # two snapshots and the first stage's weights; train and test stores
    for stage, label in (("stage3", "ema-step5000"), ("stage2", "ema-step1000")):
        ckpt = f"--ckpt {tmp_path}/run/{stage}/snapshots/ema-step1000.pt"
        assert sum(ckpt in x and f"{tmp_path}/c/cache/{label}/" in x for x in extracts) == 2
    names = [x.split("--name ")[1].split()[0] for x in runs if "probe train" in x]
    assert sorted(names) == sorted(
        f"{label}-{point}"
        for label in ("ema-step0", "ema-step1000", "ema-step5000")
        for point in ("best", "paper")
    )
    assert sum(f"--out {tmp_path}/c/samples/ema-step5000" in x for x in runs) == 1
    assert runs[-1].startswith("diffprobe analysis table") and f"{tmp_path}/c/results/curve.md" in runs[-1]
