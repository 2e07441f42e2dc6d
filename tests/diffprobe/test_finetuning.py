"""The demo's fine-tuning experiments: what they skip and what they need."""

from __future__ import annotations

import pytest

from diffprobe.experiments.registry import get_experiment, run_experiment


def test_the_cka_of_fine_tuning_stops_before_anything_runs_without_the_export(tmp_path):
    spec, shown = get_experiment("demo-finetune-cka"), []
    s = spec.settings({"ft_dir": str(tmp_path)})
    with pytest.raises(SystemExit):
        run_experiment(spec, s, dry=False, out=shown.append)
    assert shown == [f"{tmp_path}/trained/finetuned.pt missing: run make demo-finetune first"]
    run_experiment(spec, s, dry=True, out=shown.append)  # a dry run only prints
    assert not (tmp_path / "cka").exists() and shown[1].startswith("diffprobe extract run --split test")


def test_matched_budgets_skip_each_fine_tuned_run_whose_results_exist(tmp_path):
    spec, shown = get_experiment("demo-finetune-matched"), []
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "finetuned-lr3e-3.json").write_text("{}")
    run_experiment(spec, spec.settings({"ft_dir": str(tmp_path)}), dry=True, out=shown.append)
    names = [x.split("--name ")[1].split()[0] for x in shown if "probe finetune" in x]
    assert names == ["finetuned-lr1e-3", "finetuned-lr1e-2"]
