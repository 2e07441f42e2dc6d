"""Train a small ADM U-Net without labels (the demo model), resumably, on CPU or CUDA.

guided-diffusion's GaussianDiffusion supplies the loss (epsilon MSE at a timestep
drawn uniformly); its train_util is not used (it imports mpi4py). Everything random
in step k (which images, their flips, t and eps) comes from a generator seeded by
(seed, k), so a run resumed from a checkpoint continues exactly as an unbroken run
would, up to floating-point non-associativity of the kernels.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from extract import __version__
from extract.checkpoints import load_state, save_atomic
from extract.generate.loop import LoopPlan, run_steps
from extract.generate.run_files import EXPORT_DTYPES, load_training_images
from extract.models.adm import build_unet, count_parameters
from extract.models.adm_presets import get_preset
from extract.models.noise import diffusion_for
from extract.store.files import file_sha256

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"
RESUME_FIXED = ("model", "batch_size", "seed", "data", "init")  # a resumed run must keep these


@dataclass(frozen=True)
class TrainConfig:
    model: str = "demo-fmnist"
    data: str = "fashion-mnist"
    data_root: str | None = None
    split: str = "train"
    out: str = "runs/demo-fmnist"
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_rate: float = 0.999
    flip: bool = True
    max_images: int = 320_000
    max_minutes: float | None = None  # stop (after a checkpoint) when this much wall time has passed
    # stop (after a checkpoint) at this step; the LR schedule still runs to max_images
    stop_step: int | None = None
    save_every: int = 250  # steps between checkpoints
    log_every: int = 25
    seed: int = 0
    device: str = "cpu"
    channels_last: bool = False  # measured 0.9x here at 28x28 (calibration elsewhere saw 1.8x)
    threads: int | None = None
    # start from these weights (a state_dict of the preset, e.g. the shipped EMA), fresh optimizer
    init: str | None = None
    keep_every: int | None = None  # also keep the EMA every this many steps as snapshots/ema-step<N>.pt

    @property
    def max_steps(self) -> int:
        return math.ceil(self.max_images / self.batch_size)


def step_batch(cfg: TrainConfig, step: int, n_images: int, num_timesteps: int):
    """The random choices of one step: image indices, flip mask, timesteps and eps seed."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(0, n_images, (cfg.batch_size,), generator=gen)
    flips = torch.rand(cfg.batch_size, generator=gen) < (0.5 if cfg.flip else 0.0)
    t = torch.randint(0, num_timesteps, (cfg.batch_size,), generator=gen)
    return idx, flips, t, gen


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak over the image budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: torch.nn.Module, step: int, rate: float) -> None:
    # the (1 + step) / (10 + step) warmup keeps the EMA from averaging in the random init
    decay = min(rate, (1 + step) / (10 + step))
    for k, v in model.state_dict().items():
        ema[k].mul_(decay).add_(v.detach().float(), alpha=1 - decay)


def _load_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """A plain state_dict (fp16 or fp32) as fp32 tensors; one clear line if it is not one."""
    if not path.is_file():
        raise FileNotFoundError(f"--init {path}: no such file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a foreign file is one user-facing line
        raise ValueError(f"--init {path}: not a loadable state_dict ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"--init {path}: not a state_dict")
    return {k: v.float() for k, v in state.items()}


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) the preset's U-Net; returns a summary dict. Writes into cfg.out:
    train_state.pt (model, EMA, optimizer, step), train_log.jsonl (loss per log step),
    ema.pt (the EMA weights as a plain state_dict)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    preset = get_preset(cfg.model)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    images, fingerprint = load_training_images(
        cfg.data, cfg.data_root, cfg.split, preset.image_size, preset.in_channels
    )
    diffusion = diffusion_for(preset)
    device = torch.device(cfg.device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    torch.manual_seed(cfg.seed)
    model = build_unet(preset, "cpu").to(device=device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    init = None
    if cfg.init:
        try:
            model.load_state_dict(_load_weights(Path(cfg.init), device))
        except RuntimeError as e:
            raise ValueError(
                f"--init {cfg.init}: not {preset.name}'s weights ({str(e).splitlines()[0]})"
            ) from None
        init = {"path": cfg.init, "sha256": file_sha256(Path(cfg.init))}
    ema = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    step, seconds = 0, 0.0

    state_path = out / STATE_FILE
    state = load_state(
        state_path,
        device,
        {k: getattr(cfg, k) for k in RESUME_FIXED},
        needs=("model", "opt", "ema"),
        kind="demo U-Net training",
    )
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        ema = {k: v.float() for k, v in state["ema"].items()}
        step, seconds = int(state["step"]), float(state["seconds"])

    def one_step(step: int) -> dict[str, float]:
        idx, flips, t, gen = step_batch(cfg, step, len(images), diffusion.num_timesteps)
        x0 = images[idx]
        x0 = torch.where(flips[:, None, None, None], x0.flip(-1), x0)
        eps = torch.randn(x0.shape, generator=gen)
        x0, eps, t = (v.to(device) for v in (x0, eps, t))
        x0, eps = x0.contiguous(memory_format=fmt), eps.contiguous(memory_format=fmt)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss = diffusion.training_losses(model, x0, t, noise=eps)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        update_ema(ema, model, step, cfg.ema_rate)
        return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr_at(cfg, step)}

    def checkpoint(step: int, seconds: float) -> None:
        meta = {
            "config": dataclasses.asdict(cfg),
            "preset": preset.to_dict(),
            "step": step,
            "images_seen": step * cfg.batch_size,
            "seconds": seconds,
            "data_fingerprint": fingerprint,
            "init": init,
            "version": __version__,
        }
        save_atomic(state_path, {"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema, **meta})
        save_atomic(out / "ema.pt", {k: v.clone() for k, v in ema.items()})
        (out / "train_meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    def snapshot(step: int) -> None:
        (out / "snapshots").mkdir(exist_ok=True)
        save_atomic(out / "snapshots" / f"ema-step{step}.pt", {k: v.clone() for k, v in ema.items()})

    plan = LoopPlan(
        preset.name,
        cfg.max_steps,
        cfg.batch_size,
        cfg.log_every,
        cfg.save_every,
        cfg.keep_every,
        cfg.max_minutes,
        cfg.stop_step,
    )
    step, seconds = run_steps(
        plan, step, seconds, one_step, checkpoint, snapshot, out / LOG_FILE, lambda s: f"loss {s['loss']:.4f}"
    )
    return {
        "step": step,
        "images_seen": step * cfg.batch_size,
        "seconds": round(seconds, 1),
        "parameters": count_parameters(model),
        "out": str(out),
    }


def export_ema(out: str | Path, dest: str | Path, dtype: str = "float32") -> dict:
    """Write the EMA weights as a plain state_dict file (what --ckpt loads) in fp32 or, to
    halve the file, fp16 (the loader casts back to fp32); returns the run's train meta."""
    out = Path(out)
    ema = torch.load(out / "ema.pt", map_location="cpu", weights_only=True)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(dest, {k: v.to(EXPORT_DTYPES[dtype]).contiguous() for k, v in ema.items()})
    return json.loads((out / "train_meta.json").read_text())


def plot_loss(log_rows: list[dict], out: str | Path, title: str) -> str:
    """The training loss (and a running mean) against images seen, as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.array([r["images"] for r in log_rows], dtype=float)
    loss = np.array([r["loss"] for r in log_rows])
    window = max(1, len(loss) // 30)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.4), constrained_layout=True)
    ax.plot(images / 1e3, loss, alpha=0.35, lw=0.8, label="loss (one batch)")
    ax.plot(images[window - 1 :] / 1e3, smooth, lw=1.6, label=f"running mean of {window}")
    ax.set_xlabel("images seen (thousands)")
    ax.set_ylabel("epsilon MSE")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    out = Path(out)
    fig.savefig(out, dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    return f"{out}: {len(log_rows)} log points, final running mean {smooth[-1]:.4f}"
