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
