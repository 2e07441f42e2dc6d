"""Sampling across batch sizes (`make bench-sampling`, `python -m extract.bench.sampling`).

The same images of the shipped demo model drawn in one batch, in halves and one at a time, for
each sampler: are the uint8 images identical, and by how much does the U-Net's float output
itself move with the batch shape? Image i's noise comes from its own generator, so only kernel
rounding can differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from extract.generate.sampling import draw, respaced_diffusion
from extract.models.adm import load_checkpoint, shipped_weights
from extract.models.adm_presets import get_preset


def compare_batchings(images: int = 8, steps: int = 20, seed: int = 0) -> dict:
    preset = get_preset("demo-fmnist")
    model = load_checkpoint(preset, shipped_weights(preset))
    out: dict = {
        "model": preset.name,
        "images": images,
        "steps": steps,
        "seed": seed,
        "threads": torch.get_num_threads(),
    }
    half = images // 2
    for sampler in ("ddpm", "ddim"):
        diffusion = respaced_diffusion(preset, steps, sampler)

        def one(idx: list[int]) -> np.ndarray:
            """The images of rows idx, drawn with this iteration's sampler."""
            return draw(
                preset, model, idx, None, steps=steps, sampler=sampler, seed=seed, diffusion=diffusion
            )

        whole = one(list(range(images)))
        halves = np.concatenate([one(list(range(a, a + half))) for a in (0, half)])
        singles = np.concatenate([one([i]) for i in range(images)])
        out[sampler] = {
            "equal_whole_vs_halves": bool(np.array_equal(whole, halves)),
            "equal_whole_vs_singles": bool(np.array_equal(whole, singles)),
            "pixels_differing_whole_vs_singles": int((whole != singles).sum()),
            "pixels": int(whole.size),
            "max_grey_levels_whole_vs_singles": int(np.abs(whole.astype(int) - singles).max()),
        }
    x = torch.randn(
        images,
        preset.in_channels,
        preset.image_size,
        preset.image_size,
        generator=torch.Generator().manual_seed(seed),
    )
    t = torch.full((images,), 500)
    with torch.no_grad():
        a = model(x, t)
        b = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(images)])
    out["unet_float_max_abs_whole_vs_singles"] = float((a - b).abs().max())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m extract.bench.sampling", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("evidence/bench/sampling.json"))
    args = parser.parse_args(argv)
    result = compare_batchings(args.images, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
