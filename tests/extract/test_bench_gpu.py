"""The GPU benchmark script, checked on the CPU with the tiny preset (correctness, not speed)."""

import json
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from extract.bench import gpu as bg
from extract.bench import gpu_quick as gq
from extract.bench.gpu_config import quick_config
from extract.cli import cli
from extract.models.adm_blocks import unet_blocks
from extract.models.adm_presets import get_preset
from extract.store.schema import FeatureKey, FeatureStore

TINY = dict(model="tiny", block=7, device="cpu", warmup=1, repeats=1, loader_images=0)


def test_flops_per_image_of_adm256_at_b24_match_facts():
    gflop = bg.flops_per_image(get_preset("adm256-uncond"), 24) / 1e9  # meta device: no memory, no arithmetic
    assert abs(gflop - 639.3) / 639.3 < 0.01


def test_grid_on_cpu_gives_one_positive_row_per_case():
    cfg = bg.GpuBenchConfig(
        **TINY,
        batches=(2, 4),
        dtypes=("fp32", "bf16"),
        channels_last=(False, True),
        compile=(False,),
        peak_tflops=1.0,
    )
    rows = bg.bench_gpu(cfg)
    assert len(rows) == 8
    assert {(r.batch, r.dtype, r.channels_last) for r in rows} == {
        (b, d, c) for b in (2, 4) for d in ("fp32", "bf16") for c in (False, True)
    }
    flops = bg.flops_per_image(get_preset("tiny"), 7)
    for r in rows:
        assert not r.error and r.images_per_s > 0 and r.step_s > 0
        assert r.tflops == pytest.approx(r.images_per_s * flops / 1e12)
        assert r.peak_fraction == pytest.approx(r.tflops / 1.0)
        assert r.peak_memory_gb is None  # only measured on CUDA


@pytest.mark.slow
def test_compile_flag_reaches_torch_compile_and_keeps_the_features():
    preset, dev = get_preset("tiny"), torch.device("cpu")
    cfg = bg.GpuBenchConfig(
        **TINY,
        batches=(2,),
        dtypes=("fp32",),
        channels_last=(False,),
        compile=(True,),
        compile_backend="eager",
    )
    rows = bg.bench_gpu(cfg)
    assert [(r.compile, r.error) for r in rows] == [(True, "")] and rows[0].images_per_s > 0
    compiled = bg.prepare_model(preset, dev, channels_last=False, compiled=True, cfg=cfg)
    plain = bg.prepare_model(preset, dev, channels_last=False, compiled=False, cfg=cfg)
    assert all(
        hasattr(block.forward, "_torchdynamo_orig_callable") for _, block in unet_blocks(compiled).values()
    )
    x, t, y = bg.make_inputs(preset, 2, dev, channels_last=False, t=150)
    torch.testing.assert_close(
        bg.early_features(compiled, x, t, 7, "fp32"), bg.early_features(plain, x, t, 7, "fp32")
    )
    torch._dynamo.reset()


def test_channels_last_gives_the_same_early_exit_features():
    preset, dev = get_preset("tiny"), torch.device("cpu")
    cfg = bg.GpuBenchConfig(**TINY)
    feats = {}
    for cl in (False, True):
        model = bg.prepare_model(preset, dev, channels_last=cl, compiled=False, cfg=cfg)
        x, t, y = bg.make_inputs(preset, 3, dev, channels_last=cl, t=150)
        assert x.is_contiguous(memory_format=torch.channels_last) == cl
        feats[cl] = bg.early_features(model, x, t, 7, "fp32", y)
    assert feats[True].shape == (3, 64, 8, 8)
    torch.testing.assert_close(feats[True], feats[False], rtol=1e-4, atol=1e-5)


def test_a_failing_case_is_a_row_not_a_crash(monkeypatch):
    real = bg.time_case

    def flaky(model, preset, cfg, device, batch, dtype, channels_last):
        if batch == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 17.00 GiB\nmore detail")
        return real(model, preset, cfg, device, batch, dtype, channels_last)

    monkeypatch.setattr(bg, "time_case", flaky)
    rows = bg.bench_gpu(
        bg.GpuBenchConfig(**TINY, batches=(2, 4), dtypes=("fp32",), channels_last=(False,), compile=(False,))
    )
    assert rows[0].images_per_s > 0 and not rows[0].error
    assert (
        rows[1].images_per_s is None
        and rows[1].error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 17.00 GiB"
    )


@pytest.mark.slow
def test_loader_decodes_the_synthetic_jpegs(tmp_path):
    cfg = bg.GpuBenchConfig(**{**TINY, "loader_images": 10}, loader_workers=(0, 2), loader_batch=4)
    rows = bg.bench_loader(cfg, root=tmp_path)
    assert [(r.workers, r.images, r.errors) for r in rows] == [(0, 10, 0), (2, 10, 0)]
    assert all(r.images_per_s > 0 for r in rows)
    files = sorted((tmp_path / "train" / "synthetic").glob("*.jpg"))
    assert len(files) == 10
    with Image.open(files[0]) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (500, 375))


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("Some GPU", None),
    ],
)
def test_peak_is_looked_up_by_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert bg.peak_tflops(bg.GpuBenchConfig(), torch.device("cuda"))[0] == peak
    assert bg.peak_tflops(bg.GpuBenchConfig(peak_tflops=500.0), torch.device("cuda")) == (500.0, "given")


def test_cli_runs_on_cpu_and_writes_json(tmp_path):
    out = tmp_path / "gpu.json"
    args = [
        "bench-gpu",
        "--model",
        "tiny",
        "--block",
        "7",
        "--batch",
        "4",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
        "--no-compile",
        "--no-channels-last",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--workers",
        "0",
        "--loader-images",
        "4",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "data loading" in result.output
    report = json.loads(out.read_text())
    assert report["config"]["batches"] == [4] and report["config"]["compile"] == [False]
    assert [r["dtype"] for r in report["extraction"]] == ["bf16"] and report["extraction"][0][
        "images_per_s"
    ] > 0
    assert report["loader"][0]["images"] == 4 and isinstance(report["loader_keeps_up"], bool)
    assert report["machine"]["torch"] == torch.__version__ and report["date"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_cli_without_cuda_says_so_in_one_line():
    result = CliRunner().invoke(cli, ["bench-gpu", "--model", "tiny", "--block", "7", "--device", "cuda"])
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text and "CUDA is not available" in text and len(text.splitlines()) == 1, text


# ---------------------------------------------------------------- quick mode (bench-gpu --quick)
QUICK_CPU = [
    "bench-gpu",
    "--quick",
    "--model",
    "tiny",
    "--block",
    "7",
    "--batch",
    "2",
    "--device",
    "cpu",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--io-rows",
    "300",
    "--io-dim",
    "64",
    "--io-shard-rows",
    "128",
    "--identity-model",
    "tiny",
    "--identity-images",
    "2",
    "--identity-dtype",
    "bf16",
]


def test_quick_config_is_one_batch_no_compile_no_loader_and_given_options_win():
    q = quick_config()
    assert (q.model, q.block, q.batches, q.dtypes, q.channels_last, q.compile, q.loader_images) == (
        "adm256-uncond",
        24,
        (64,),
        ("bf16", "fp16"),
        (False, True),
        (False,),
        0,
    )
    assert quick_config(batches=(2,), compile=(True,), model="tiny").batches == (2,)
    assert quick_config(compile=(True,)).compile == (True,)


def test_quick_mode_on_cpu_runs_all_three_parts(tmp_path):
    out = tmp_path / "quick.json"
    result = CliRunner().invoke(cli, [*QUICK_CPU, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (
        report["mode"] == "quick"
        and report["config"]["batches"] == [2]
        and report["config"]["compile"] == [False]
    )
    assert (
        report["config"]["loader_images"] == 0
        and report["loader"] == []
        and report["loader_keeps_up"] is None
    )
    # a. one row per dtype x channels_last, no compile
    rows = report["extraction"]
    assert not report["extraction_error"]
    assert sorted((r["dtype"], r["channels_last"]) for r in rows) == [
        ("bf16", False),
        ("bf16", True),
        ("fp16", False),
        ("fp16", True),
    ]
    for r in rows:
        assert (
            not r["error"]
            and r["images_per_s"] > 0
            and r["batch"] == 2
            and r["compile"] is False
            and r["model"] == "tiny"
        )
    assert report["gflop_per_image"] > 0
    assert report["best_extraction_images_per_s"] == max(r["images_per_s"] for r in rows)
    # b. the store's read rate against np.load of the same bytes
    io = report["store_read"]
    assert not io["error"] and io["matches"] is True
    assert (io["rows"], io["row_shape"], io["dtype"], io["shards"]) == (300, [16, 2, 2], "float16", 3)
    assert (
        io["store_mb_per_s"] > 0
        and io["numpy_mb_per_s"] > 0
        and io["store_rows_per_s"] > 0
        and io["store_over_numpy"] > 0
    )
    # c. two extractions at batch sizes 1 and 2 (micro-batch 1), bit for bit the same on the CPU
    ident = report["bit_identity"]
    assert (
        not ident["error"]
        and ident["identical"] is True
        and ident["batch_sizes"] == [1, 2]
        and ident["micro_batch"] == 1
    )
    assert [r["dtype"] for r in ident["runs"]] == ["bf16"]
    for r in ident["runs"]:
        assert not r["error"] and r["identical"] is True and r["max_abs_diff"] == 0.0 and r["keys"]
    assert (
        set(report["part_seconds"]) == {"extraction", "store_read", "bit_identity"} and report["seconds"] > 0
    )
    text = result.output
    assert (
        "quick mode" in text
        and "store read:" in text
        and "np.load" in text
        and "bit identity: tiny" in text
        and "NOT identical" not in text
    )
    assert "failed" not in text and "skipped" not in text


def test_a_failing_quick_part_is_one_line_and_the_others_go_on(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    monkeypatch.setattr(gq, "bench_gpu", boom)
    monkeypatch.setattr(gq, "check_bit_identity", boom)
    cfg = quick_config(
        model="tiny",
        block=7,
        device="cpu",
        io_rows=100,
        io_dim=16,
        io_shard_rows=64,
        io_repeats=1,
        identity_model="tiny",
    )
    result = gq.run_quick_bench(cfg)
    line = "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert (
        result["extraction_error"] == line
        and result["extraction"] == []
        and result["best_extraction_images_per_s"] is None
    )
    assert result["bit_identity"]["error"] == line and result["bit_identity"]["identical"] is None
    # the part between still ran
    assert not result["store_read"]["error"] and result["store_read"]["store_mb_per_s"] > 0
    text = bg.format_report(json.loads(json.dumps(result)))
    assert (
        f"extraction failed: {line}" in text
        and f"bit identity (tiny): failed: {line}" in text
        and "store read:" in text
    )


def test_quick_parts_after_the_time_budget_are_skipped(monkeypatch):
    cfg = quick_config(model="tiny", block=7, device="cpu", identity_model="tiny", time_budget_s=1e-9)
    result = gq.run_quick_bench(cfg)
    assert result["extraction_error"].startswith("skipped")
    assert result["store_read"]["error"].startswith("skipped")
    assert result["bit_identity"]["error"].startswith("skipped") and result["part_seconds"] == {}
    assert "skipped: the time budget of 0 s was spent" in bg.format_report(result)


def test_grid_cases_after_the_deadline_are_skipped_rows(monkeypatch):
    monkeypatch.setattr(
        bg, "prepare_model", lambda *a, **k: pytest.fail("no model is built after the deadline")
    )
    rows = bg.bench_gpu(
        bg.GpuBenchConfig(**TINY, batches=(2,), dtypes=("bf16", "fp16"), compile=(False,)),
        deadline=time.monotonic() - 1,
    )
    assert len(rows) == 4 and all(r.error == bg.SKIPPED and r.images_per_s is None for r in rows)


def test_compare_stores_finds_one_changed_value(tmp_path):
    key = FeatureKey(150, 7, 2)

    def store(name, x):
        s = FeatureStore.create(
            tmp_path / name,
            row_shapes={key: x.shape[1:]},
            ids=[str(i) for i in range(len(x))],
            labels=np.zeros(len(x), np.int64),
            index=np.arange(len(x)),
            shard_rows=len(x),
            views=1,
            dtype="float16",
            attrs={},
        )
        s.write_shard(0, {key: x}, np.ones(len(x), bool))
        return s

    x = np.random.default_rng(0).standard_normal((4, 8, 2, 2)).astype(np.float16)
    y = x.copy()
    y[2, 3, 1, 0] += np.float16(0.5)
    assert gq.compare_stores(store("a.zarr", x), store("b.zarr", x.copy())) == (True, 0.0, ["t150/b7/p2"])
    identical, diff, _ = gq.compare_stores(store("c.zarr", x), store("d.zarr", y))
    assert identical is False and diff == pytest.approx(abs(float(y[2, 3, 1, 0]) - float(x[2, 3, 1, 0])))
