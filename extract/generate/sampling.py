"""Draw many images from a guided-diffusion preset, resumably, seeded per image.

guided-diffusion's `SpacedDiffusion` supplies the respaced schedule and `p_mean_variance` (the
model call, learned or fixed variance, clipping of x0); the two update rules below are its
`p_sample` and `ddim_sample` with one change: the noise. guided-diffusion draws it with
`torch.randn_like` over the whole batch, so an image depends on its batch and on the global RNG.
Here image i owns a generator seeded by (seed, i) that gives its x_T and then the noise of every
step, so image i is the same whatever the batch size, the shard, the rank or where a run resumed
(up to the kernels' rounding, which can differ between batch sizes; see the README's numbers).

This module holds the samplers, a run's settings and the model card's grid; a run of N images
into a folder is extract.generate.sample_folder.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from extract.models import gd
from extract.models.adm import load_unet
from extract.models.adm_presets import ModelPreset, get_preset
from extract.models.precision import AUTOCAST_DTYPES
from extract.models.weights import weights_label

NUM_CLASSES = 1000  # guided-diffusion's class-conditional models are ImageNet-1k's


def image_seed(seed: int, index: int) -> int:
    """The seed of image `index`'s own generator (a hash, so nearby seeds share no streams)."""
    digest = hashlib.blake2b(f"diffprobe-sample:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------- the samplers
def respaced_diffusion(preset: ModelPreset, steps: int, sampler: str):
    """guided-diffusion's SpacedDiffusion for the preset's schedule at `steps` steps: evenly
    spaced for DDPM, the DDIM paper's integer stride ("ddimN") for DDIM, as guided-diffusion's
    README samples with `--timestep_respacing 250` and `--timestep_respacing ddim25`."""
    spacing = RESPACING[sampler](steps)
    try:
        return gd.create_gaussian_diffusion(
            steps=preset.diffusion_steps,
            learn_sigma=preset.learn_sigma,
            noise_schedule=preset.noise_schedule,
            timestep_respacing=spacing,
        )
    except ValueError as e:
        raise ValueError(f"--steps {steps} with --sampler {sampler}: {e}") from None


def ddpm_step(
    diffusion,
    model,
    x: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    eta: float,
    clip: bool,
    model_kwargs: dict,
) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} (guided-diffusion's p_sample). x, noise: (B, C, H, W); t: (B,)."""
    out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip, model_kwargs=model_kwargs)
    nonzero = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))  # no noise at the last step
    return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise


def ddim_step(
    diffusion,
    model,
    x: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    eta: float,
    clip: bool,
    model_kwargs: dict,
) -> torch.Tensor:
    """One DDIM step (guided-diffusion's ddim_sample, Song et al. eq. 12); eta=0 is deterministic."""
    out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip, model_kwargs=model_kwargs)
    eps = diffusion._predict_eps_from_xstart(x, t, out["pred_xstart"])
    extract = gd.gaussian_diffusion._extract_into_tensor
    abar, abar_prev = (
        extract(diffusion.alphas_cumprod, t, x.shape),
        extract(diffusion.alphas_cumprod_prev, t, x.shape),
    )
    sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
    mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
    nonzero = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
    return mean + nonzero * sigma * noise


Step = Callable[..., torch.Tensor]
SAMPLERS: dict[str, Step] = {"ddpm": ddpm_step, "ddim": ddim_step}
RESPACING: dict[str, Callable[[int], str]] = {"ddpm": str, "ddim": lambda steps: f"ddim{steps}"}


class _Cast:
    """The model under autocast, its output back in fp32 (the sampler's arithmetic stays fp32)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
        self.model, self.device, self.dtype = model, device, dtype

    def __call__(self, x, t, **kwargs):
        amp = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        with amp:
            return self.model(x, t, **kwargs).float()


@torch.no_grad()
def draw(
    preset: ModelPreset,
    model: torch.nn.Module,
    indices: list[int],
    labels: list[int] | None,
    *,
    steps: int,
    sampler: str = "ddpm",
    eta: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    clip: bool = True,
    diffusion=None,
) -> np.ndarray:
    """Images `indices` as uint8 (len(indices), S, S, C); one batch. Image i's x_T and step noise
    come from its own generator (image_seed(seed, i)), drawn on the CPU. `labels` (one per
    image) feed class-conditional models and must be None for unconditional ones."""
    device = torch.device(device)
    diffusion = diffusion or respaced_diffusion(preset, steps, sampler)
    step = SAMPLERS[sampler]
    shape = (preset.in_channels, preset.image_size, preset.image_size)
    gens = [torch.Generator().manual_seed(image_seed(seed, int(i))) for i in indices]

    def noise() -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)

    kwargs = {"y": torch.as_tensor(labels, dtype=torch.long, device=device)} if labels is not None else {}
    net = _Cast(model.eval(), device, AUTOCAST_DTYPES[dtype])
    x = noise()
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((len(indices),), i, dtype=torch.long, device=device)
        x = step(diffusion, net, x, t, noise(), eta, clip, kwargs)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------- a run of N images
@dataclass(frozen=True)
class SampleConfig:
    out: Path
    model: str = "demo-fmnist"
    ckpt: Path | None = None  # default: the preset's shipped weights
    random_init: bool = False  # the random-weight control (extract.models.adm.random_unet)
    n: int = 1000
    steps: int = 250
    sampler: str = "ddpm"
    eta: float = 0.0  # DDIM only
    # conditional presets: one class for all, or None: class i % 1000 for image i
    class_label: int | None = None
    seed: int = 0
    batch_size: int = 16  # speed only: images do not depend on it
    shard_size: int = 1000  # images per shard: the unit of resume and of the split between ranks
    dtype: str = "fp32"  # autocast dtype of the U-Net
    clip: bool = True  # clip predicted x0 to [-1, 1], as guided-diffusion's sample script does
    device: str | None = None  # default: CUDA when present
    overwrite: bool = False
    progress: bool = True


def check_config(cfg: SampleConfig, preset: ModelPreset) -> None:
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if cfg.dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(AUTOCAST_DTYPES)}, got {cfg.dtype!r}")
    if cfg.eta and cfg.sampler != "ddim":
        raise ValueError("--eta applies to --sampler ddim only")
    if cfg.n < 1 or cfg.batch_size < 1 or cfg.shard_size < 1 or cfg.steps < 1:
        raise ValueError("--n, --batch-size, --shard-size and --steps must be at least 1")
    if cfg.class_label is not None and not preset.class_cond:
        raise ValueError(f"--class-label: {preset.name} is unconditional")
    if cfg.class_label is not None and not 0 <= cfg.class_label < NUM_CLASSES:
        raise ValueError(f"--class-label {cfg.class_label} is outside 0..{NUM_CLASSES - 1}")
    if cfg.random_init and cfg.ckpt is not None:
        raise ValueError("give --ckpt or --random-init, not both")
    # a step count the schedule cannot take fails here, before any work
    respaced_diffusion(preset, cfg.steps, cfg.sampler)


def load_model(cfg: SampleConfig, preset: ModelPreset) -> tuple[torch.nn.Module, dict]:
    """The U-Net and its weights record, with a short label for file names and tables."""
    model, weights = load_unet(preset, cfg.ckpt or None, random_init=cfg.random_init, seed=cfg.seed)
    return model, {**weights, "label": weights_label(weights)}


def labels_for(cfg: SampleConfig, preset: ModelPreset, indices: range | list[int]) -> list[int] | None:
    if not preset.class_cond:
        return None
    return [cfg.class_label if cfg.class_label is not None else i % NUM_CLASSES for i in indices]


def draw_images(
    cfg: SampleConfig, preset: ModelPreset, model, idx: list[int], device, diffusion
) -> np.ndarray:
    """Images `idx` of the run as uint8 (len(idx), S, S, C): one batch."""
    return draw(
        preset,
        model,
        idx,
        labels_for(cfg, preset, idx),
        steps=cfg.steps,
        sampler=cfg.sampler,
        eta=cfg.eta,
        seed=cfg.seed,
        device=device,
        dtype=cfg.dtype,
        clip=cfg.clip,
        diffusion=diffusion,
    )


# ---------------------------------------------------------------- the model card's grid
def parse_class_label(text: str | None) -> int | None:
    """`--class-label 207` -> 207; `all` or nothing -> None (class i % 1000 for image i)."""
    if text is None or str(text).strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--class-label {text!r}: expected a class number or 'all'") from None


def grid(cfg: SampleConfig) -> str:
    """Images 0..n-1 of a run (the same pixels a samples folder would hold) as one grid PNG at
    cfg.out, the model card's figure; returns a one-line summary."""
    from PIL import Image

    from extract.store.dist import pick_device

    preset = get_preset(cfg.model)
    check_config(cfg, preset)
    device = pick_device(cfg.device)
    model, weights = load_model(cfg, preset)
    model = model.to(device)
    diffusion = respaced_diffusion(preset, cfg.steps, cfg.sampler)
    images = np.concatenate(
        [
            draw_images(cfg, preset, model, list(range(a, min(a + cfg.batch_size, cfg.n))), device, diffusion)
            for a in range(0, cfg.n, cfg.batch_size)
        ]
    )
    cols = math.ceil(math.sqrt(cfg.n))
    rows = math.ceil(cfg.n / cols)
    size = preset.image_size
    canvas = np.full((rows * (size + 2) + 2, cols * (size + 2) + 2, images.shape[-1]), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[
            2 + r * (size + 2) : 2 + r * (size + 2) + size, 2 + c * (size + 2) : 2 + c * (size + 2) + size
        ] = img
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas).save(out)
    return f"{out}: {cfg.n} samples from {weights['label']}, {cfg.sampler} {cfg.steps} steps, seed {cfg.seed}"


def sample_grid(model: str, ckpt: str | Path | None, n: int, steps: int, seed: int, out: str | Path) -> str:
    """`grid` with the model card's arguments (DDPM, the preset's shipped weights by default)."""
    return grid(
        SampleConfig(
            out=Path(out), model=model, ckpt=Path(ckpt) if ckpt else None, n=n, steps=steps, seed=seed
        )
    )
