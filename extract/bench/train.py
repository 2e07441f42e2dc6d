"""Training throughput of candidate demo architectures (`make bench-train`, `python -m extract.bench.train`).

The model card's "why this architecture" table: for each candidate, one AdamW step of
guided-diffusion's training loss (epsilon MSE at uniform t) on a batch of random images, timed
after warm-up steps. Only speed and block layout are compared here; no candidate's accuracy enters
the choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from extract.models.adm import build_unet, count_parameters
from extract.models.adm_blocks import block_table
from extract.models.adm_presets import get_preset
from extract.models.noise import diffusion_for

# name -> changes to the demo preset; the first is what ships
CANDIDATES: dict[str, dict] = {
    "adm256/8 (shipped)": {},
    "adm256/8, channel_mult 1,1,2,2,2,2": {"channel_mult": (1, 1, 2, 2, 2, 2)},
    "28x28, channel_mult 1,2,2, 5 res blocks, attention at 7": {
        "image_size": 28,
        "channel_mult": (1, 2, 2),
        "num_res_blocks": 5,
        "attention_resolutions": (7,),
    },
}


def time_training(preset, batch: int, steps: int, warmup: int, seed: int = 0) -> float:
    """Images per second of AdamW steps on guided-diffusion's loss, (batch, C, S, S) random inputs."""
    torch.manual_seed(seed)
    model = build_unet(preset).train()
    diffusion = diffusion_for(preset)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, preset.in_channels, preset.image_size, preset.image_size)
    elapsed = 0.0
    for step in range(warmup + steps):
        t = torch.randint(0, diffusion.num_timesteps, (batch,))
        started = time.perf_counter()
        loss = diffusion.training_losses(model, x0, t)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= warmup:
            elapsed += time.perf_counter() - started
    return batch * steps / elapsed


def bench_train(batch: int = 64, steps: int = 5, warmup: int = 2) -> list[dict]:
    base = get_preset("demo-fmnist")
    rows = []
    for name, changes in CANDIDATES.items():
        preset = dataclasses.replace(base, **changes)
        table = block_table(preset)
        b24 = table[23] if len(table) >= 24 else None
        rows.append(
            {
                "candidate": name,
                "blocks": len(table),
                "parameters": count_parameters(build_unet(preset)),
                "b24": None if b24 is None else f"{b24.module} {b24.channels}x{b24.height}x{b24.width}",
                "train_images_per_s": round(time_training(preset, batch, steps, warmup), 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m extract.bench.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("evidence/bench/train.json"))
    args = parser.parse_args(argv)
    rows = bench_train(args.batch, args.steps)
    result = {
        "batch": args.batch,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        size = f"{r['blocks']:>3} blocks {r['parameters']:>10,} params"
        print(f"{r['candidate']:<58} {size}  b24 {r['b24']}  {r['train_images_per_s']:>6.1f} train img/s")


if __name__ == "__main__":
    main()
