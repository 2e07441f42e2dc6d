"""The early-exit benchmark's parts in-process, on the tiny preset (its timings are not checked:
speed lives in `make bench-extract`)."""

from __future__ import annotations

import torch

from extract.bench.early_exit import bench_case, format_table


def test_a_case_times_both_forwards_and_the_table_prints_its_ratio():
    row = bench_case("tiny", block=2, batch=1, repeats=1, dtype="fp32", device=torch.device("cpu"))
    assert (row.model, row.block, row.batch) == ("tiny", 2, 1)
    assert row.full_s > 0 and row.early_s > 0
    record = {"model": "tiny", "block": 2, "batch": 1, "dtype": "fp32", "full_s": 2.0, "early_s": 0.5}
    lines = format_table({"rows": [{**record, "speedup": 4.0}]}).splitlines()
    assert lines[0].split() == ["model", "b", "batch", "dtype", "full", "s", "early", "s", "ratio"]
    assert lines[1].split() == ["tiny", "2", "1", "fp32", "2.000", "0.500", "4.00x"]
