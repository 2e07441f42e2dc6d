"""Early exit against the model's own full forward: same inputs, dtype, batch, one run.

guided-diffusion U-Nets, and the latent presets (tiny SD and DiT): for those also the latent
cache against VAE encoding, i.e. what a run at another t or b saves by reusing latents."""

from __future__ import annotations

import platform
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from extract.models.adm import build_unet
from extract.models.adm_blocks import capture
from extract.models.adm_presets import get_preset
from extract.models.precision import AUTOCAST_DTYPES

# (preset, block, batch, repeats): adm256 at the paper's b=24; tiny at its middle block
DEFAULT_CASES = (("adm256-uncond", 24, 1, 1), ("tiny", 7, 64, 5))
# latent presets at their default blocks (tiny-sd: up_blocks.0, b=12 of 17; tiny-dit: b=2 of 4)
LATENT_CASES = (("tiny-sd", 12, 64, 5), ("tiny-dit", 2, 64, 5))


@dataclass(frozen=True)
class BenchRow:
    model: str
    block: int
    batch: int
    dtype: str
    device: str
    full_s: float  # seconds per batch, guided-diffusion's UNetModel.forward
    early_s: float  # seconds per batch, stopped after `block`

    @property
    def speedup(self) -> float:
        return self.full_s / self.early_s


def _seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_case(
    model_name: str, block: int, batch: int, repeats: int, dtype: str, device: torch.device
) -> BenchRow:
    preset = get_preset(model_name)
    torch.manual_seed(0)
    # random weights: speed does not depend on them
    model = build_unet(preset).requires_grad_(False).to(device)
    x = torch.randn(batch, preset.in_channels, preset.image_size, preset.image_size, device=device)
    t = torch.full((batch,), 150, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device) if preset.class_cond else None
    amp = (
        torch.autocast(device.type, dtype=AUTOCAST_DTYPES[dtype]) if AUTOCAST_DTYPES[dtype] else nullcontext()
    )

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def full():
        with torch.inference_mode(), amp:
            model(x, t, y=y)
        sync()

    def early():
        with torch.inference_mode(), amp:
            capture(model, x, t, [block], y=y)
        sync()

    early()  # warm-up (kernel selection, allocator)
    return BenchRow(
        model_name, block, batch, dtype, str(device), _seconds(full, repeats), _seconds(early, repeats)
    )


@dataclass(frozen=True)
class LatentBenchRow(BenchRow):
    encode_s: float = 0.0  # seconds per batch, VAE encode of the images
    cache_s: float = 0.0  # seconds per batch, the same latents read from a latent cache store

    @property
    def cache_speedup(self) -> float:
        return self.encode_s / self.cache_s


def bench_latent_case(
    model_name: str, block: int, batch: int, repeats: int, dtype: str, device: torch.device
) -> LatentBenchRow:
    """Random weights (speed does not depend on them): denoiser full vs early exit on random
    latents; VAE encode of random images vs reading their latents back from a store."""
    from extract.models.families import preset_of
    from extract.models.latent import load_latent_model
    from extract.models.latent_blocks import capture_latent, meta_inputs
    from extract.models.latent_run import LATENT_KEY, encode_images
    from extract.store.schema import FeatureStore

    preset = preset_of(model_name)
    model = load_latent_model(preset, random_init=True).to(device)
    g = torch.Generator().manual_seed(0)
    z, t, _ = meta_inputs(preset, batch, "cpu")
    z, t, cond = (
        torch.randn(z.shape, generator=g).to(device),
        t.fill_(150).to(device),
        model.batch_cond(batch),
    )
    images = torch.rand(batch, 3, preset.image_size, preset.image_size, generator=g).to(device) * 2 - 1
    amp = (
        torch.autocast(device.type, dtype=AUTOCAST_DTYPES[dtype]) if AUTOCAST_DTYPES[dtype] else nullcontext()
    )
    shape = (preset.latent_channels, preset.latent_size, preset.latent_size)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def full():
        with torch.inference_mode(), amp:
            capture_latent(model.denoiser, preset, z, t, cond, [preset.num_blocks], stop_early=False)
        sync()

    def early():
        with torch.inference_mode(), amp:
            capture_latent(model.denoiser, preset, z, t, cond, [block])
        sync()

    def encode():
        encode_images(model, images, batch, shape)  # one micro-batch: the whole batch
        sync()

    with tempfile.TemporaryDirectory(prefix="diffprobe-latents-") as folder:
        store = FeatureStore.create(
            Path(folder) / "latents.zarr",
            row_shapes={LATENT_KEY: shape},
            ids=[str(i) for i in range(batch)],
            labels=np.zeros(batch),
            index=np.arange(batch),
            shard_rows=batch,
            views=1,
            dtype="float32",
            attrs={},
        )
        store.write_shard(
            0,
            {LATENT_KEY: encode_images(model, images, batch, shape)[:, 0]},
            np.ones(batch, bool),
        )

        def cached():
            torch.from_numpy(FeatureStore.open(store.path).array(LATENT_KEY)[0:batch]).to(device)
            sync()

        early()
        encode()
        return LatentBenchRow(
            model_name,
            block,
            batch,
            dtype,
            str(device),
            _seconds(full, repeats),
            _seconds(early, repeats),
            _seconds(encode, repeats),
            _seconds(cached, repeats),
        )


def bench_extract(
    cases=DEFAULT_CASES, dtype: str = "fp32", device: str | None = None, latent_cases=LATENT_CASES
) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = [bench_case(*case, dtype=dtype, device=dev) for case in cases]
    latent_rows = [bench_latent_case(*case, dtype=dtype, device=dev) for case in latent_cases]
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        },
        "rows": [{**asdict(r), "speedup": round(r.speedup, 2)} for r in rows],
        "latent_rows": [
            {**asdict(r), "speedup": round(r.speedup, 2), "cache_speedup": round(r.cache_speedup, 1)}
            for r in latent_rows
        ],
    }


HEADER = f"{'model':<15} {'b':>3} {'batch':>5} {'dtype':>5} {'full s':>8} {'early s':>8} {'ratio':>6}"


def _row(r: dict) -> str:
    case = f"{r['model']:<15} {r['block']:>3} {r['batch']:>5} {r['dtype']:>5}"
    return f"{case} {r['full_s']:>8.3f} {r['early_s']:>8.3f} {r['speedup']:>5.2f}x"


def format_table(result: dict) -> str:
    lines = [HEADER] + [_row(r) for r in result["rows"]]
    if result.get("latent_rows"):
        lines.append(f"{HEADER} {'encode s':>9} {'cache s':>8} {'ratio':>7}")
        for r in result["latent_rows"]:
            lines.append(f"{_row(r)} {r['encode_s']:>9.4f} {r['cache_s']:>8.4f} {r['cache_speedup']:>6.1f}x")
    return "\n".join(lines)
