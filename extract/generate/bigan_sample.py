"""Draw images from a trained BiGAN's generator, in the layout `extract sample` writes, so
`analysis fid --fake DIR` and `--data samples --data-root DIR` read them unchanged:

  png/000123.png          one grayscale PNG per image
  samples_NxHxWxC.npz     all images as guided-diffusion's sample file (arr_0 uint8 NHWC)
  samples.json            the key and provenance (complete, n, samples, sha256), written last

Image i's z comes from a generator seeded by (seed, i) alone (`extract sample`'s image_seed),
so image i is the same whatever N; G runs in eval mode (BatchNorm's running statistics).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from extract import __version__
from extract.models.bigan_nets import load_bigan
from extract.models.weights import file_sha256, weights_label, weights_record

KEY_FILE, PNG_DIR = "samples.json", "png"


def image_seed(seed: int, index: int) -> int:
    # the same per-image seeds as `extract sample`
    from extract.generate.sampling import image_seed as seed_of

    return seed_of(seed, index)


def codes(z_dim: int, indices, seed: int) -> torch.Tensor:
    """z of each image index, (len(indices), z_dim), each from its own seeded generator."""
    return torch.stack(
        [
            torch.randn(z_dim, generator=torch.Generator().manual_seed(image_seed(seed, int(i))))
            for i in indices
        ]
    )


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """G's output (N, 1, H, W) in [-1, 1] -> uint8 (N, H, W, 1), as `extract sample` quantises."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def sample_bigan(
    weights: str | Path, n: int, seed: int, out: str | Path, batch_size: int = 256, overwrite: bool = False
) -> str:
    """Write n samples of the BiGAN in `weights` into the folder `out`; returns a summary line."""
    from PIL import Image

    started = time.perf_counter()
    model = load_bigan(weights)
    out = Path(out)
    record = weights_record(weights)
    key = {"model": "bigan", "arch": model.arch.to_dict(), "weights": record, "n": n, "seed": seed}
    if (out / KEY_FILE).is_file():
        old = json.loads((out / KEY_FILE).read_text()).get("key")
        if old == key:
            return f"{out}: {n} samples already drawn with these arguments"
        if not overwrite:
            raise ValueError(
                f"{out} holds samples made with other arguments; use --overwrite or another --out"
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not a samples folder; use --overwrite or another --out")
    shutil.rmtree(out / PNG_DIR, ignore_errors=True)
    for stale in (out / KEY_FILE, *out.glob("samples_*.npz")):
        stale.unlink(missing_ok=True)
    (out / PNG_DIR).mkdir(parents=True, exist_ok=True)
    batches = []
    with torch.inference_mode():
        for a in range(0, n, batch_size):
            batches.append(
                to_uint8(model.generator(codes(model.arch.z_dim, range(a, min(a + batch_size, n)), seed)))
            )
    images = np.concatenate(batches)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0]).save(out / PNG_DIR / f"{i:06d}.png", format="PNG")
    npz = out / f"samples_{'x'.join(map(str, images.shape))}.npz"

    def save_npz(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, arr_0=images)

    _atomic(npz, save_npz)
    seconds = round(time.perf_counter() - started, 2)
    provenance = {
        "model": "bigan",
        "checkpoint": record["checkpoint"],
        "checkpoint_sha256": record["sha256"],
        "weights": weights_label(record),
        "sampler": "generator",
        "steps": 1,
        "seed": seed,
        "n": n,
        "samples": npz.name,
        "sha256": file_sha256(npz),
        "version": __version__,
        "torch_version": str(torch.__version__),
        "seconds": seconds,
    }
    _atomic(
        out / KEY_FILE,
        lambda p: p.write_text(
            json.dumps({"key": key, "complete": True, "provenance": provenance}, indent=1) + "\n"
        ),
    )
    return (
        f"{npz}: {n} images in {seconds} s, bigan {record['checkpoint']}@{record['sha256'][:12]}, seed {seed}"
    )
