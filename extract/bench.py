"""Early exit against guided-diffusion's own full forward: same inputs, dtype, batch, one run."""

from __future__ import annotations

import platform
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from extract.blocks import capture
from extract.models import build_unet
from extract.presets import get_preset
from extract.run import AUTOCAST_DTYPES

# (preset, block, batch, repeats): adm256 at the paper's b=24; tiny at its middle block
DEFAULT_CASES = (("adm256-uncond", 24, 1, 1), ("tiny", 7, 64, 5))


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


def bench_case(model_name: str, block: int, batch: int, repeats: int, dtype: str, device: torch.device) -> BenchRow:
    preset = get_preset(model_name)
    torch.manual_seed(0)
    model = build_unet(preset).requires_grad_(False).to(device)  # random weights: speed does not depend on them
    x = torch.randn(batch, preset.in_channels, preset.image_size, preset.image_size, device=device)
    t = torch.full((batch,), 150, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device) if preset.class_cond else None
    amp = torch.autocast(device.type, dtype=AUTOCAST_DTYPES[dtype]) if AUTOCAST_DTYPES[dtype] else nullcontext()

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
    return BenchRow(model_name, block, batch, dtype, str(device), _seconds(full, repeats), _seconds(early, repeats))


def bench_extract(cases=DEFAULT_CASES, dtype: str = "fp32", device: str | None = None) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = [bench_case(*case, dtype=dtype, device=dev) for case in cases]
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"},
        "rows": [{**asdict(r), "speedup": round(r.speedup, 2)} for r in rows],
    }  # fmt: skip


def format_table(result: dict) -> str:
    lines = [f"{'model':<15} {'b':>3} {'batch':>5} {'dtype':>5} {'full s':>8} {'early s':>8} {'ratio':>6}"]
    for r in result["rows"]:
        lines.append(
            f"{r['model']:<15} {r['block']:>3} {r['batch']:>5} {r['dtype']:>5} {r['full_s']:>8.3f} {r['early_s']:>8.3f} {r['speedup']:>5.2f}x"
        )
    return "\n".join(lines)
