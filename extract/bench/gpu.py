"""GPU extraction throughput: early exit (adm256, b=24) at large batches, bf16/fp16,
channels_last and torch.compile on and off, as a fraction of the GPU's peak; and whether
JPEG decoding with DataLoader workers keeps up with it.

Latent presets (sd15, sd21, dit-xl-2-256, tiny-sd, tiny-dit) run their denoiser with random
weights on random latents at the preset's resolution (SD-2.1: 96x96 latents of 768 px images;
DiT-XL/2: 32x32 of 256 px), conditioned on random text states or the null class.

Runs anywhere: on the CPU with the tiny preset it is a correctness check of the script,
not a performance number. Every (channels_last, compile, dtype, batch) case that fails
(out of memory, a compiler error) becomes a row with an error, never a crash.

Quick mode (`bench-gpu --quick`, extract.bench.gpu_quick) runs a cut-down grid, the store's
read rate and a bit-identity check of the extraction on the device, in under 4 minutes.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import torch
from torch.utils.flop_counter import FlopCounterMode

# the settings (importable without torch) and the printed report, importable from here
from extract.bench.gpu_config import GpuBenchConfig  # noqa: F401
from extract.bench.gpu_report import format_report  # noqa: F401
from extract.bench.gpu_loader import bench_loader
from extract.bench.gpu_setup import OPS, AdmOps, validate
from extract.models.adm_presets import ModelPreset
from extract.models.precision import AUTOCAST_DTYPES

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendor data sheets; fp16 is the
# same on these parts. First substring of the device name that matches wins (PCIe before H100).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (dense bf16, the datasheet peak)
    ("H200", 989.0),  # also GH200
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


@dataclass(frozen=True)
class ExtractRow:
    model: str
    block: int
    batch: int
    dtype: str
    channels_last: bool
    compile: bool
    device: str
    warmup_s: float | None = None  # all warm-up steps together (includes compiling)
    step_s: float | None = None  # median seconds per batch
    images_per_s: float | None = None
    tflops: float | None = None  # achieved, from the counted FLOPs per image
    peak_fraction: float | None = None
    peak_memory_gb: float | None = None
    error: str = ""


def peak_tflops(cfg: GpuBenchConfig, device: torch.device) -> tuple[float | None, str]:
    """(peak dense bf16 TFLOP/s, where it came from); (None, reason) when unknown."""
    if cfg.peak_tflops is not None:
        return cfg.peak_tflops, "given"
    if device.type != "cuda":
        return None, f"no peak for {device.type}"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"table: {key}"
    return None, f"{name} is not in PEAK_BF16_TFLOPS; pass --peak-tflops"


def flops_per_image(preset: ModelPreset, block: int) -> float:
    """FLOPs (2 x multiply-adds) of one image's forward stopped after `block`, counted on
    the meta device (no memory, no arithmetic). adm256 at b=24: 639.3e9."""
    ops = OPS[type(preset)]
    model = ops.build(preset, "meta")
    x, t, y = make_inputs(preset, 1, torch.device("meta"), False, 0)
    with FlopCounterMode(display=False) as counter:
        ops.capture(model, preset, x, t, y, [block])
    return float(counter.get_total_flops())


def prepare_model(
    preset: ModelPreset, device: torch.device, channels_last: bool, compiled: bool, cfg: GpuBenchConfig
) -> torch.nn.Module:
    """A random-weight U-Net (speed does not depend on the weights) on `device`.

    With `compiled`, each block's forward is compiled, not the model: capture's hooks on
    the blocks then stay in eager Python, so early exit works exactly as in `extract run`.
    """
    ops = OPS[type(preset)]
    torch.manual_seed(cfg.seed)
    model = ops.build(preset, device).requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compiled:
        blocks = ops.blocks(model, preset)
        for block in blocks.values():
            # a block holding other numbered blocks stays eager, so the hooks of those run (and can
            # stop the forward)
            if not any(
                other is not block and any(m is other for m in block.modules()) for other in blocks.values()
            ):
                block.forward = torch.compile(
                    block.forward, backend=cfg.compile_backend, mode=cfg.compile_mode
                )
    return model


def make_inputs(
    preset: ModelPreset, batch: int, device: torch.device, channels_last: bool, t: int, seed: int = 0
):
    """x (batch, C, S, S) (latent presets: latents), t (batch,), y: class labels (batch,), SD's
    text states (batch, 77, D), or None."""
    x, y = OPS[type(preset)].inputs(preset, batch, device, torch.Generator().manual_seed(seed))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    steps = torch.full((batch,), t, dtype=torch.long, device=device)
    return x, steps, y


def early_features(model, x, t, block: int, dtype: str, y=None, preset=None) -> torch.Tensor:
    """The activation of `block` (N, C_b, H_b, W_b), forward stopped there, under autocast.
    `preset` is needed for latent presets (their block table); guided-diffusion's is the model's."""
    autocast = AUTOCAST_DTYPES[dtype]
    amp = torch.autocast(x.device.type, dtype=autocast) if autocast is not None else nullcontext()
    ops = OPS[type(preset)] if preset is not None else AdmOps
    with torch.inference_mode(), amp:
        return ops.capture(model, preset, x, t, y, [block])[block]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def time_case(
    model, preset: ModelPreset, cfg: GpuBenchConfig, device, batch: int, dtype: str, channels_last: bool
) -> tuple[float, float, float | None]:
    """(warm-up seconds, median seconds per batch, peak GPU memory in GB or None)."""
    x, t, y = make_inputs(preset, batch, device, channels_last, cfg.t, cfg.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(cfg.warmup):
        early_features(model, x, t, cfg.block, dtype, y, preset)
    _sync(device)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        early_features(model, x, t, cfg.block, dtype, y, preset)
        _sync(device)
        times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return warmup_s, sorted(times)[len(times) // 2], memory


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_gpu(
    cfg: GpuBenchConfig, deadline: float | None = None, flops: float | None = None
) -> list[ExtractRow]:
    """One row per (channels_last, compile, dtype, batch). One model per (channels_last,
    compile), kept over dtypes and batches so compiled blocks recompile only on new shapes.
    Cases not begun by `deadline` (time.monotonic()) are rows with a "skipped" error;
    `flops` per image, where the caller has counted them already."""
    preset, device = validate(cfg)
    flops = flops_per_image(preset, cfg.block) if flops is None else flops
    peak, _ = peak_tflops(cfg, device)
    rows = []
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = (
        cfg.cudnn_benchmark,
        not cfg.cudnn_benchmark,
    )
    try:
        # every block shares TimestepEmbedSequential.forward's code object: allow its many entries,
        # and fail loudly rather than fall back to eager silently when even that is exceeded
        with torch._dynamo.config.patch(
            recompile_limit=1024, accumulated_recompile_limit=4096, fail_on_recompile_limit_hit=True
        ):
            for channels_last in cfg.channels_last:
                for compiled in cfg.compile:
                    rows += _bench_model(preset, cfg, device, channels_last, compiled, flops, peak, deadline)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
    return rows


def _over(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


SKIPPED = "skipped: the time budget was spent"


def _bench_model(
    preset,
    cfg,
    device,
    channels_last: bool,
    compiled: bool,
    flops: float,
    peak: float | None,
    deadline: float | None = None,
) -> list[ExtractRow]:
    base = dict(
        model=preset.name, block=cfg.block, channels_last=channels_last, compile=compiled, device=str(device)
    )
    rows = []
    model, error = None, SKIPPED if _over(deadline) else ""
    if not error:
        try:
            model = prepare_model(preset, device, channels_last, compiled, cfg)
        except Exception as e:  # noqa: BLE001 - recorded as rows, the grid goes on
            error = _first_line(e)
    for dtype in cfg.dtypes:
        for batch in cfg.batches:
            if model is None or _over(deadline):
                rows.append(ExtractRow(batch=batch, dtype=dtype, error=error or SKIPPED, **base))
                continue
            try:
                warmup_s, step_s, memory = time_case(model, preset, cfg, device, batch, dtype, channels_last)
            except Exception as e:  # noqa: BLE001 - out of memory, compiler errors: a row, not a crash
                rows.append(ExtractRow(batch=batch, dtype=dtype, error=_first_line(e), **base))
                _free(device)
                continue
            images_per_s = batch / step_s
            tflops = images_per_s * flops / 1e12
            rows.append(
                ExtractRow(
                    batch=batch,
                    dtype=dtype,
                    warmup_s=warmup_s,
                    step_s=step_s,
                    images_per_s=images_per_s,
                    tflops=tflops,
                    peak_fraction=tflops / peak if peak else None,
                    peak_memory_gb=memory,
                    **base,
                )
            )
    del model
    if compiled:
        torch._dynamo.reset()
    _free(device)
    return rows


# ---------------------------------------------------------------- the whole report
def machine_info(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def run_gpu_bench(cfg: GpuBenchConfig) -> dict:
    """Extraction grid, loader rates and the verdict, with the machine and config (JSON-ready)."""
    preset, device = validate(cfg)
    peak, peak_source = peak_tflops(cfg, device)
    flops = flops_per_image(preset, cfg.block)
    extraction = bench_gpu(cfg)
    loader = bench_loader(cfg)
    best = max((r.images_per_s for r in extraction if r.images_per_s), default=None)
    best_loader = max((r.images_per_s for r in loader), default=None)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "config": asdict(cfg),
        "gflop_per_image": flops / 1e9,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "images_per_s_at_40pct_of_peak": 0.4 * peak * 1e12 / flops if peak else None,
        "extraction": [asdict(r) for r in extraction],
        "loader": [asdict(r) for r in loader],
        "best_extraction_images_per_s": best,
        "best_loader_images_per_s": best_loader,
        "loader_keeps_up": best_loader >= best if best and best_loader else None,
    }
