"""Train the BiGAN baseline (extract.models.bigan_nets) on Fashion-MNIST, resumably, the way
extract.generate.train trains the demo U-Net: the same images (the same registry and
preprocessing to 32x32 grayscale in [-1, 1], random horizontal flips), the same run folder
layout (train_state.pt, train_log.jsonl, train_meta.json) and the same determinism: everything
random in step k (which images, their flips, z, D's dropout masks) comes from seeds of
(seed, k), so a run resumed from a checkpoint continues exactly as an unbroken run would.

Losses are the BiGAN paper's (non-saturating form): D classifies real pairs (x, E(x)) as 1 and
fake pairs (G(z), z) as 0 with binary cross-entropy on logits; G and E take one joint Adam
step on the flipped labels. Adam lr 2e-4, betas (0.5, 0.999), constant lr. There is no EMA:
the exported weights are the final ones (`bigan.pt`, one state_dict of all three nets).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from extract import __version__
from extract.data.sources import PREPROCESSING
from extract.checkpoints import load_state, save_atomic
from extract.generate.loop import LoopPlan, run_steps
from extract.generate.run_files import EXPORT_DTYPES, load_training_images, read_log
from extract.models.bigan_nets import CHANNELS, IMAGE_SIZE, BiGAN, BiganArch, parameter_counts

STATE_FILE, LOG_FILE, WEIGHTS_FILE, META_FILE = (
    "train_state.pt",
    "train_log.jsonl",
    "bigan.pt",
    "train_meta.json",
)
# a resumed run must keep these
RESUME_FIXED = ("batch_size", "seed", "data", "split", "z_dim", "width", "flip")


@dataclass(frozen=True)
class BiganTrainConfig:
    data: str = "fashion-mnist"
    data_root: str | None = None
    split: str = "train"
    out: str = "runs/bigan-fmnist"
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    z_dim: int = 64
    width: int = 64
    flip: bool = True
    # 20,000 steps of 64: about 0.7 of the demo U-Net's CPU time (a BiGAN step costs about 1/5 of one)
    max_images: int = 1_280_000
    max_minutes: float | None = None  # stop (after a checkpoint) when this much wall time has passed
    save_every: int = 250  # steps between checkpoints
    log_every: int = 25
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    keep_every: int | None = None  # also keep the weights every this many steps as snapshots/bigan-step<N>.pt

    @property
    def max_steps(self) -> int:
        return math.ceil(self.max_images / self.batch_size)


def step_seed(cfg: BiganTrainConfig, step: int) -> int:
    return cfg.seed * 1_000_003 + step


def step_batch(
    cfg: BiganTrainConfig, step: int, images: torch.Tensor, z_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step k's real images (flipped at random) and its z, from a generator seeded by (seed, k)."""
    gen = torch.Generator().manual_seed(step_seed(cfg, step))
    idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
    flips = torch.rand(cfg.batch_size, generator=gen) < (0.5 if cfg.flip else 0.0)
    x = images[idx]
    x = torch.where(flips[:, None, None, None], x.flip(-1), x)
    return x, torch.randn(cfg.batch_size, z_dim, generator=gen)


def train_step(
    model: BiGAN,
    opt_d: torch.optim.Optimizer,
    opt_ge: torch.optim.Optimizer,
    x: torch.Tensor,
    z: torch.Tensor,
) -> dict[str, float]:
    """One D step on (x, E(x)) vs (G(z), z), then one joint G+E step on the flipped labels."""
    ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
    ez, gx = model.encoder(x), model.generator(z)
    bce = F.binary_cross_entropy_with_logits
    real, fake = model.discriminator(x, ez.detach()), model.discriminator(gx.detach(), z)
    loss_d = bce(real, ones) + bce(fake, zeros)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    real_ge, fake_ge = model.discriminator(x, ez), model.discriminator(gx, z)
    loss_ge = bce(real_ge, zeros) + bce(fake_ge, ones)
    opt_ge.zero_grad(set_to_none=True)
    loss_ge.backward()
    opt_ge.step()
    with torch.no_grad():
        acc = ((real > 0).float().mean() + (fake < 0).float().mean()) / 2
        return {
            "loss_d": loss_d.item(),
            "loss_ge": loss_ge.item(),
            "d_acc": acc.item(),
            "d_real": torch.sigmoid(real).mean().item(),
            "d_fake": torch.sigmoid(fake).mean().item(),
        }


def _weights(model: BiGAN) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build(cfg: BiganTrainConfig) -> tuple[BiGAN, torch.optim.Optimizer, torch.optim.Optimizer]:
    """The seeded model (initialised by seed alone) and its two Adam optimizers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = BiGAN(BiganArch(z_dim=cfg.z_dim, width=cfg.width))
    betas = (cfg.beta1, cfg.beta2)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr, betas=betas)
    opt_ge = torch.optim.Adam(
        [*model.generator.parameters(), *model.encoder.parameters()], lr=cfg.lr, betas=betas
    )
    return model, opt_d, opt_ge


def train(cfg: BiganTrainConfig) -> dict:
    """Train (or resume) the BiGAN; returns a summary dict. Writes into cfg.out: train_state.pt
    (nets, both optimizers, step), train_log.jsonl (losses per log step),
    bigan.pt (the weights as one plain state_dict) and train_meta.json (provenance)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    images, fingerprint = load_training_images(cfg.data, cfg.data_root, cfg.split, IMAGE_SIZE, CHANNELS)
    device = torch.device(cfg.device)
    model, opt_d, opt_ge = build(cfg)
    model.to(device).train()
    step, seconds = 0, 0.0

    state_path = out / STATE_FILE
    state = load_state(
        state_path,
        device,
        {k: getattr(cfg, k) for k in RESUME_FIXED},
        needs=("model", "opt_d", "opt_ge"),
        kind="BiGAN training",
    )
    if state is not None:
        model.load_state_dict(state["model"])
        opt_d.load_state_dict(state["opt_d"])
        opt_ge.load_state_dict(state["opt_ge"])
        step, seconds = int(state["step"]), float(state["seconds"])
    params = parameter_counts(model)

    def meta(step: int, seconds: float) -> dict:
        return {
            "config": dataclasses.asdict(cfg),
            "arch": model.arch.to_dict(),
            "parameters": params,
            "step": step,
            "images_seen": step * cfg.batch_size,
            "seconds": round(seconds, 1),
            "data_fingerprint": fingerprint,
            "preprocessing": PREPROCESSING,
            "image_size": IMAGE_SIZE,
            "channels": CHANNELS,
            "threads": torch.get_num_threads(),
            "version": __version__,
            "torch_version": str(torch.__version__),
        }

    def one_step(step: int) -> dict[str, float]:
        x, z = (v.to(device) for v in step_batch(cfg, step, images, cfg.z_dim))
        torch.manual_seed(step_seed(cfg, step))  # D's dropout masks: step k's own
        return {k: round(v, 6) for k, v in train_step(model, opt_d, opt_ge, x, z).items()}

    def checkpoint(step: int, seconds: float) -> None:
        m = meta(step, seconds)
        # no RNG state: every step reseeds from (seed, step), so a resume needs only the step
        save_atomic(
            state_path,
            {"model": model.state_dict(), "opt_d": opt_d.state_dict(), "opt_ge": opt_ge.state_dict(), **m},
        )
        save_atomic(out / WEIGHTS_FILE, _weights(model))
        (out / META_FILE).write_text(json.dumps(m, indent=2) + "\n")

    def snapshot(step: int) -> None:
        (out / "snapshots").mkdir(exist_ok=True)
        save_atomic(out / "snapshots" / f"bigan-step{step}.pt", _weights(model))

    def describe(s: dict[str, float]) -> str:
        return f"loss D {s['loss_d']:.4f}, loss G+E {s['loss_ge']:.4f}, D acc {s['d_acc']:.2f}"

    plan = LoopPlan(
        "bigan", cfg.max_steps, cfg.batch_size, cfg.log_every, cfg.save_every, cfg.keep_every, cfg.max_minutes
    )
    with torch.random.fork_rng(devices=[]):  # the per-step reseeding stays inside this run
        step, seconds = run_steps(
            plan, step, seconds, one_step, checkpoint, snapshot, out / LOG_FILE, describe
        )
    return {
        "step": step,
        "images_seen": step * cfg.batch_size,
        "seconds": round(seconds, 1),
        "parameters": params,
        "out": str(out),
    }


def export_bigan(run: str | Path, dest: str | Path, dtype: str = "float32") -> dict:
    """Write a run's weights (all three nets, one plain state_dict that loads weights-only) to
    `dest`, with the run's log and meta beside it; returns the run's meta."""
    run, dest = Path(run), Path(dest)
    if not (run / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{run}: no {WEIGHTS_FILE} (not a finished or checkpointed `train-bigan` run)"
        )
    weights = torch.load(run / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(
        dest,
        {
            k: (v.to(EXPORT_DTYPES[dtype]) if v.is_floating_point() else v).contiguous()
            for k, v in weights.items()
        },
    )
    meta = json.loads((run / META_FILE).read_text())
    dest.with_name(dest.stem + "." + LOG_FILE).write_text(
        "".join(json.dumps(r) + "\n" for r in read_log(run, LOG_FILE))
    )
    dest.with_name(dest.stem + "." + META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
