"""Train the masked autoencoder (extract.generate.mae_nets) on Fashion-MNIST, resumably, the way
extract.generate.bigan_train trains the BiGAN: the same step loop (extract.generate.loop), run
folder (train_state.pt, train_log.jsonl, train_meta.json) and determinism: everything random in
step k (which images, their flips, which patches are dropped) comes from seeds of (seed, k), so a
run resumed from a checkpoint continues exactly as an unbroken run would.

The training images go through the very transform `extract run --model timm:NAME` applies to
them (the encoder's pretrained config: grey replicated to RGB, short side to size / crop_pct,
center crop, mean and std), so the features extracted later come from the inputs it learned on.
AdamW (betas 0.9, 0.95, weight decay 0.05 on weight matrices only, as MAE), lr warmed up linearly,
then a cosine to zero at the last step. No EMA: the shipped encoder is the final one,
`encoder.safetensors`, a timm state_dict that `--ckpt` loads as it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from extract import __version__
from extract.checkpoints import load_state, save_atomic
from extract.data.registry import open_dataset
from extract.data.sources import to_mode
from extract.generate.loop import LoopPlan, run_steps
from extract.generate.mae_nets import ENCODER, ENCODER_ARGS, MAE, MaeArch, parameter_counts
from extract.generate.run_files import EXPORT_DTYPES, read_log
from extract.models import timm_build

STATE_FILE, LOG_FILE, WEIGHTS_FILE, META_FILE = (
    "train_state.pt",
    "train_log.jsonl",
    "encoder.safetensors",
    "train_meta.json",
)
# a resumed run must keep these
RESUME_FIXED = (
    "batch_size",
    "seed",
    "data",
    "split",
    "encoder",
    "encoder_args",
    "decoder_dim",
    "decoder_depth",
    "decoder_heads",
    "mask_ratio",
    "flip",
    "max_images",
    "lr",
    "warmup_steps",
)


@dataclass(frozen=True)
class MaeTrainConfig:
    data: str = "fashion-mnist"
    data_root: str | None = None
    split: str = "train"
    out: str = "runs/mae-fmnist"
    encoder: str = ENCODER
    encoder_args: tuple[str, ...] = ENCODER_ARGS
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mask_ratio: float = 0.75
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.05
    flip: bool = True
    # 2,000 steps of 128 (4.3 epochs): about 30 CPU minutes, an hour on one shared CPU thread
    max_images: int = 256_000
    max_minutes: float | None = None  # stop (after a checkpoint) when this much wall time has passed
    stop_step: int | None = None  # stop (after a checkpoint) at this step; the schedule is unchanged
    save_every: int = 100  # steps between checkpoints
    log_every: int = 20
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    keep_every: int | None = (
        None  # also keep the encoder every N steps as snapshots/encoder-step<N>.safetensors
    )

    @property
    def max_steps(self) -> int:
        return math.ceil(self.max_images / self.batch_size)

    def arch(self) -> MaeArch:
        return MaeArch(
            self.encoder,
            tuple(self.encoder_args),
            self.decoder_dim,
            self.decoder_depth,
            self.decoder_heads,
            self.mask_ratio,
        )


def step_seed(cfg: MaeTrainConfig, step: int) -> int:
    return cfg.seed * 1_000_003 + step


def learning_rate(cfg: MaeTrainConfig, step: int) -> float:
    """Step k's lr: linear warmup over warmup_steps, then a half cosine to 0 at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    done = (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


def load_images(cfg: MaeTrainConfig, model: MAE) -> tuple[torch.Tensor, str, dict]:
    """Every image of the split as (N, 3, S, S) float32, through the timm family's eval transform
    for this encoder (what extraction feeds it); the source's fingerprint and the transform's record."""
    prep = timm_build.preprocessing(model.encoder, model.arch.spec())
    transform = prep.transform()
    source = open_dataset(cfg.data, Path(cfg.data_root) if cfg.data_root else None, cfg.split)
    rows = [transform(to_mode(source.load(i), 3)) for i in range(len(source))]
    return torch.stack(rows), source.fingerprint(), prep.record()


def step_batch(cfg: MaeTrainConfig, step: int, images: torch.Tensor) -> tuple[torch.Tensor, torch.Generator]:
    """Step k's images (flipped at random) and the generator its masks are drawn from, seeded by (seed, k)."""
    gen = torch.Generator().manual_seed(step_seed(cfg, step))
    idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
    flips = torch.rand(cfg.batch_size, generator=gen) < (0.5 if cfg.flip else 0.0)
    x = images[idx]
    return torch.where(flips[:, None, None, None], x.flip(-1), x), gen


def train_step(
    model: MAE, opt: torch.optim.Optimizer, x: torch.Tensor, gen: torch.Generator
) -> dict[str, float]:
    loss, stats = model.loss(x, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return stats


def build(cfg: MaeTrainConfig) -> tuple[MAE, torch.optim.AdamW]:
    """The seeded model (initialised by seed alone) and its AdamW: weight decay on weight matrices,
    none on biases, norms, position embeddings and the class and mask tokens."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = MAE(cfg.arch())
    named = list(model.named_parameters())
    no_decay = ("pos_embed", "cls_token", "mask_token", "decoder_pos")
    decay = [p for n, p in named if p.ndim >= 2 and not any(k in n for k in no_decay)]
    rest = [p for n, p in named if not (p.ndim >= 2 and not any(k in n for k in no_decay))]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def save_encoder(path: Path, model: MAE, dtype: str = "float32") -> None:
    """The encoder's timm state_dict as safetensors, written to a temporary name then renamed."""
    from safetensors.torch import save_file

    state = {
        k: (v.detach().to(EXPORT_DTYPES[dtype]) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.encoder.state_dict().items()
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _fixed(cfg: MaeTrainConfig) -> dict:
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k in RESUME_FIXED}


def train(cfg: MaeTrainConfig) -> dict:
    """Train (or resume) the MAE; returns a summary dict. Writes into cfg.out: train_state.pt (model,
    optimizer, step, seconds), train_log.jsonl, encoder.safetensors and train_meta.json."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    model, opt = build(cfg)
    images, fingerprint, prep = load_images(cfg, model)
    model.to(device).train()
    step, seconds, cpu_before = 0, 0.0, 0.0
    state_path = out / STATE_FILE
    state = load_state(state_path, device, _fixed(cfg), needs=("model", "opt"), kind="MAE training")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, seconds = int(state["step"]), float(state["seconds"])
        cpu_before = float(state.get("cpu_seconds", 0.0))
    params = parameter_counts(model)
    cpu_start = time.process_time()

    def cpu_seconds() -> float:  # this process's CPU time (all its threads) over every sitting
        return cpu_before + time.process_time() - cpu_start

    def meta(step: int, seconds: float) -> dict:
        return {
            "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
            "arch": model.arch.to_dict(),
            "parameters": params,
            "step": step,
            "images_seen": step * cfg.batch_size,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds(), 3),
            "data_fingerprint": fingerprint,
            "preprocessing": prep,
            "threads": torch.get_num_threads(),
            "version": __version__,
            "torch_version": str(torch.__version__),
        }

    def one_step(step: int) -> dict[str, float]:
        x, gen = step_batch(cfg, step, images)
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        stats = train_step(model, opt, x.to(device), gen)
        return {
            **{k: round(v, 6) for k, v in stats.items()},
            "lr": lr,
            "cpu_seconds": round(cpu_seconds(), 3),
        }

    def checkpoint(step: int, seconds: float) -> None:
        m = meta(step, seconds)
        # no RNG state: every step reseeds from (seed, step), so a resume needs only the step
        save_atomic(state_path, {"model": model.state_dict(), "opt": opt.state_dict(), **m})
        save_encoder(out / WEIGHTS_FILE, model)
        (out / META_FILE).write_text(json.dumps(m, indent=2) + "\n")

    def snapshot(step: int) -> None:
        (out / "snapshots").mkdir(exist_ok=True)
        save_encoder(out / "snapshots" / f"encoder-step{step}.safetensors", model)

    def describe(s: dict[str, float]) -> str:
        return f"loss {s['loss']:.4f} (visible {s['loss_visible']:.4f}), lr {s['lr']:.2e}"

    plan = LoopPlan(
        "mae",
        cfg.max_steps,
        cfg.batch_size,
        cfg.log_every,
        cfg.save_every,
        cfg.keep_every,
        cfg.max_minutes,
        cfg.stop_step,
    )
    with torch.random.fork_rng(devices=[]):
        step, seconds = run_steps(
            plan, step, seconds, one_step, checkpoint, snapshot, out / LOG_FILE, describe
        )
    return {
        "step": step,
        "images_seen": step * cfg.batch_size,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds(), 3),
        "parameters": params,
        "out": str(out),
    }


def export_mae(run: str | Path, dest: str | Path, dtype: str = "float32") -> dict:
    """Write a run's encoder (a timm state_dict, safetensors) to `dest`, with the run's log and
    meta beside it; returns the run's meta."""
    from safetensors.torch import load_file, save_file

    run, dest = Path(run), Path(dest)
    if not (run / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{run}: no {WEIGHTS_FILE} (not a finished or checkpointed `train-mae` run)")
    weights = load_file(str(run / WEIGHTS_FILE))
    dest.parent.mkdir(parents=True, exist_ok=True)
    cast = {
        k: (v.to(EXPORT_DTYPES[dtype]) if v.is_floating_point() else v).contiguous()
        for k, v in weights.items()
    }
    save_file(cast, str(dest), metadata={"format": "pt"})
    meta = json.loads((run / META_FILE).read_text())
    stem = dest.name.removesuffix(".safetensors")
    dest.with_name(stem + "." + LOG_FILE).write_text(
        "".join(json.dumps(r) + "\n" for r in read_log(run, LOG_FILE))
    )
    dest.with_name(stem + "." + META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
