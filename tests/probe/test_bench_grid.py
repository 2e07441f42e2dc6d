"""`make bench-probe`'s compute-alone part: the linear bank's GEMM FLOPs, its GFLOP/s beside
torch.matmul's on the same GEMMs, and the command line. No timing thresholds."""

from __future__ import annotations

import pytest

from probe.bench.grid import bank_gemms, bench_bank_flops, format_flops, format_table
from probe.cli import main


def test_bank_gemm_flops_match_the_hand_count():
    # batch 4, 6 features, 3 heads of 5 classes: forward (4 x 15) = (4 x 6)(6 x 15) and
    # grad W (15 x 6) = (15 x 4)(4 x 6), 2mnk each; no input gradient
    gemms = bank_gemms(batch=4, dim=6, members=3, classes=5)
    assert [(g["m"], g["n"], g["k"]) for g in gemms] == [(4, 15, 6), (15, 6, 4)]
    assert [g["flops"] for g in gemms] == [2 * 4 * 15 * 6, 2 * 15 * 6 * 4] == [720, 720]
    assert sum(g["flops"] for g in gemms) == 4 * 4 * 6 * 3 * 5


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_bench_bank_flops_reports_rates_and_their_ratio(optimizer):
    r = bench_bank_flops(
        dim=8, classes=3, batch=4, members=2, optimizer=optimizer, budget_s=0.01, most=3, peak_n=32
    )
    assert r["flops_per_step"] == 4 * 4 * 8 * 2 * 3 == sum(g["flops"] for g in r["gemms"])
    assert r["dtype"] == "float32" and r["members"] == 2 and r["optimizer"] == optimizer
    assert all(v > 0 for v in r["seconds"].values())
    assert r["bank_gflops"] > 0 and r["matmul_gflops"] > 0 and r["peak_gflops"] > 0
    assert r["bank_over_matmul"] == pytest.approx(r["bank_gflops"] / r["matmul_gflops"], rel=2e-3)
    assert r["bank_gflops"] == pytest.approx(r["flops_per_step"] / r["seconds"]["step"] / 1e9, rel=2e-3)
    assert r["matmul_gflops"] == pytest.approx(r["flops_per_step"] / r["seconds"]["matmul"] / 1e9, rel=2e-3)
    text = format_flops(r)
    assert "bank / matmul" in text and "GFLOP/s" in text
    assert "compute alone" in format_table({"dim": 8, "classes": 3, "threads": r["threads"], "flops": r})


def test_bench_command_help_lists_the_new_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--threads" in out and "--flops-only" in out and "--shape" in out
