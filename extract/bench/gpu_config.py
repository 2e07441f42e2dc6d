"""The GPU benchmark's settings, apart from its code so the CLI can show defaults without torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuBenchConfig:
    model: str = "adm256-uncond"
    block: int = 24
    batches: tuple[int, ...] = (64, 128, 256)
    dtypes: tuple[str, ...] = ("bf16", "fp16")  # autocast dtypes (extract.store.config.FORWARD_DTYPES)
    channels_last: tuple[bool, ...] = (False, True)
    compile: tuple[bool, ...] = (False, True)
    compile_backend: str = "inductor"  # "eager": trace only (a cheap CPU check of the compile path)
    compile_mode: str | None = None  # torch.compile mode, e.g. "max-autotune-no-cudagraphs"
    cudnn_benchmark: bool = False  # False: fixed algorithms, as `extract run` uses
    warmup: int = 3  # untimed steps per case (the first one compiles)
    repeats: int = 10  # timed steps per case; the median is reported
    t: int = 150
    seed: int = 0
    device: str = "cuda"
    peak_tflops: float | None = None  # None: look the device up in PEAK_BF16_TFLOPS
    loader_images: int = 1024  # synthetic JPEGs to decode; 0 skips the loader part
    loader_workers: tuple[int, ...] = (0, 4, 8, 16)
    loader_batch: int = 64
    jpeg_size: tuple[int, int] = (500, 375)  # width, height: a typical ImageNet photo
    # quick mode only (extract.bench.gpu_quick): the store's read rate and a bit-identity check
    io_rows: int = 20000  # rows of the synthetic fp16 store
    io_dim: int = 4096  # features per row, stored as (io_dim // 4, 2, 2): a pooled block
    io_shard_rows: int = 2048
    io_repeats: int = 3  # reads of each kind; the best is reported
    # small preset extracted twice (random weights): ADM-256's blocks at 1/8 scale
    identity_model: str = "demo-fmnist"
    identity_images: int = 8  # generated images in an imagefolder
    identity_dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16")  # one pair of extractions per dtype
    time_budget_s: float = 200.0  # quick mode: parts and cases not begun by then are skipped (one line each)


# Quick mode: the paper's model at one batch, bf16/fp16 x channels_last on/off, no compile
# (compiling takes minutes) and no JPEG loader; then the store's read rate and a GPU
# bit-identity check. On an H200 (about 790 TFLOP/s bf16 peak on matrix products, 300-400
# at realistic efficiency for this U-Net): 639 GFLOP per image x 64 = 41 TFLOP a batch, about
# 0.1-0.2 s; 4 cases x 13 batches (3 warm-up, 10 timed) about 10 s, with the two model builds
# (552M parameters, initialised on the GPU) and first-call cuDNN/cuBLAS set-up about 30 s;
# the store part (164 MB written once, read 3 x 2 ways) about 10 s; the bit-identity pairs
# (demo-fmnist, 8 images, 3 dtypes) about 15 s; with imports and CUDA start-up about 1-1.5
# minutes in all, 2 at worst. The time budget skips what is left after 200 s.
QUICK_DEFAULTS = dict(batches=(64,), compile=(False,), loader_images=0)


def quick_config(**overrides) -> GpuBenchConfig:
    """Quick mode's settings; `overrides` (what the command line was given) win."""
    return GpuBenchConfig(**{**QUICK_DEFAULTS, **overrides})
