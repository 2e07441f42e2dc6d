"""What the GPU bench runs on: its checked settings, the device, and each model family's
operations (build, block modules, inputs, capture), looked up by preset type."""

from __future__ import annotations

import torch

from extract.bench.gpu_config import GpuBenchConfig
from extract.models.adm import build_unet
from extract.models.adm_blocks import capture, unet_blocks
from extract.models.adm_presets import ModelPreset
from extract.models.families import preset_of
from extract.models.latent_presets import LatentPreset
from extract.models.precision import AUTOCAST_DTYPES


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"CUDA is not available: torch {torch.__version__} "
                f"(CUDA build {torch.version.cuda or 'none'}) sees no GPU; "
                "use --device cpu for a correctness check"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"CUDA is not available: {name} asked for, {torch.cuda.device_count()} GPU(s) visible"
            )
    return device


class AdmOps:
    """guided-diffusion U-Nets: build, block modules, inputs, capture."""

    build = staticmethod(lambda preset, device: build_unet(preset, device))
    blocks = staticmethod(lambda model, preset: {b: m for b, (_, m) in unet_blocks(model).items()})
    capture = staticmethod(lambda model, preset, x, t, y, blocks: capture(model, x, t, blocks, y=y))

    @staticmethod
    def inputs(preset, batch: int, device, gen: torch.Generator):
        x = torch.randn(batch, preset.in_channels, preset.image_size, preset.image_size, generator=gen).to(
            device
        )
        y = torch.zeros(batch, dtype=torch.long, device=device) if preset.class_cond else None
        return x, y


class LatentOps:
    """SD and DiT denoisers through diffusers (imported only when such a preset is asked for)."""

    @staticmethod
    def build(preset, device):
        from extract.models.latent import build_denoiser

        return build_denoiser(preset, device)

    @staticmethod
    def blocks(model, preset):
        from extract.models.latent_blocks import latent_blocks

        return {b: m for b, (_, m) in latent_blocks(model, preset).items()}

    @staticmethod
    def capture(model, preset, x, t, y, blocks):
        from extract.models.latent_blocks import capture_latent

        return capture_latent(model, preset, x, t, y, blocks)

    @staticmethod
    def inputs(preset, batch: int, device, gen: torch.Generator):
        from extract.models.latent_blocks import meta_inputs

        z, _, cond = meta_inputs(preset, batch, "cpu")
        z = torch.randn(z.shape, generator=gen)
        cond = torch.randn(cond.shape, generator=gen) if cond.is_floating_point() else cond
        return z.to(device), cond.to(device)


OPS = {ModelPreset: AdmOps, LatentPreset: LatentOps}


def validate(cfg: GpuBenchConfig) -> tuple[ModelPreset | LatentPreset, torch.device]:
    preset = preset_of(cfg.model)
    if type(preset) not in OPS:
        raise ValueError(f"--model {cfg.model}: the GPU bench times ADM and SD/DiT presets")
    if not 1 <= cfg.block <= preset.num_blocks:
        raise ValueError(f"block {cfg.block} is outside 1..{preset.num_blocks} for {preset.name}")
    unknown = [d for d in cfg.dtypes if d not in AUTOCAST_DTYPES]
    if unknown:
        raise ValueError(f"unknown dtype {unknown[0]!r}; choose from {', '.join(AUTOCAST_DTYPES)}")
    for name, values in (
        ("batches", cfg.batches),
        ("dtypes", cfg.dtypes),
        ("channels_last", cfg.channels_last),
        ("compile", cfg.compile),
    ):
        if not values:
            raise ValueError(f"{name} is empty")
    if min(cfg.batches) < 1 or cfg.warmup < 1 or cfg.repeats < 1 or cfg.loader_batch < 1:
        raise ValueError("batches, warmup, repeats and loader_batch must be at least 1")
    if cfg.loader_images < 0 or min(cfg.loader_workers, default=0) < 0:
        raise ValueError("loader_images and loader workers must be at least 0")
    return preset, resolve_device(cfg.device)
