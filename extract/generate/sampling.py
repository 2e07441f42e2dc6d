"""Draw many images from a guided-diffusion preset, resumably, seeded per image.

guided-diffusion's `SpacedDiffusion` supplies the respaced schedule and `p_mean_variance` (the
model call, learned or fixed variance, clipping of x0); the two update rules below are its
`p_sample` and `ddim_sample` with one change: the noise. guided-diffusion draws it with
`torch.randn_like` over the whole batch, so an image depends on its batch and on the global RNG.
Here image i owns a generator seeded by (seed, i) that gives its x_T and then the noise of every
step, so image i is the same whatever the batch size, the shard, the rank or where a run resumed
(up to the kernels' rounding, which can differ between batch sizes; see the README's numbers).

A run writes into one folder:
  images.zarr             the images as a store (extract.store): one row per image, key
                          t0/b0/full of shape (H, W, C) holding the uint8 values (exact in
                          float16), labels the classes drawn; written by the one resumable
                          writer (lock, one shard of --shard-size images at a time, a done
                          marker per shard, `complete` last)
  png/000123.png          one file per image, written with its shard, before the shard's marker
  samples_NxHxWxC.npz     all images in guided-diffusion's sample format (arr_0, arr_1)
  samples.json            the key (everything that changes a pixel) and provenance, written last
A killed run resumes by drawing exactly the shards without a done marker. Under torchrun each
rank samples the shards s with s % world_size == rank, as extraction does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from extract import __version__
from extract.models import gd
from extract.models.adm import load_unet
from extract.models.adm_presets import ModelPreset, get_preset
from extract.models.precision import AUTOCAST_DTYPES
from extract.models.weights import file_sha256, weights_label
from extract.store.schema import FeatureKey

KEY_FILE = "samples.json"
PNG_DIR, STORE_NAME = "png", "images.zarr"
IMAGE_KEY = FeatureKey(0, 0, None)  # the images' one array in the store: uint8 values, (H, W, C)
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
    class_label: int | None = (
        None  # conditional presets: one class for all, or None: class i % 1000 for image i
    )
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
    respaced_diffusion(
        preset, cfg.steps, cfg.sampler
    )  # a step count the schedule cannot take fails here, before any work


def load_model(cfg: SampleConfig, preset: ModelPreset) -> tuple[torch.nn.Module, dict]:
    """The U-Net and its weights record, with a short label for file names and tables."""
    model, weights = load_unet(preset, cfg.ckpt or None, random_init=cfg.random_init, seed=cfg.seed)
    return model, {**weights, "label": weights_label(weights)}


def labels_for(cfg: SampleConfig, preset: ModelPreset, indices: range | list[int]) -> list[int] | None:
    if not preset.class_cond:
        return None
    return [cfg.class_label if cfg.class_label is not None else i % NUM_CLASSES for i in indices]


def sampling_key(cfg: SampleConfig, preset: ModelPreset, weights: dict, device: torch.device) -> dict:
    """Everything that changes a pixel. Batch size and progress do not (images are seeded one
    by one); the device type may, through kernel rounding, so it is part of the key."""
    # through JSON, so it compares equal to the key read back from samples.json (tuples become lists)
    return json.loads(
        json.dumps(
            {
                "model": preset.to_dict(),
                "weights": {k: v for k, v in weights.items() if k != "label"},
                "n": cfg.n,
                "steps": cfg.steps,
                "sampler": cfg.sampler,
                "respacing": RESPACING[cfg.sampler](cfg.steps),
                "eta": cfg.eta,
                "classes": (
                    None
                    if not preset.class_cond
                    else "i % 1000"
                    if cfg.class_label is None
                    else cfg.class_label
                ),
                "seed": cfg.seed,
                "shard_size": cfg.shard_size,
                "dtype": cfg.dtype,
                "clip_denoised": cfg.clip,
                "device_type": device.type,
            }
        )
    )


def shard_rows(n: int, shard_size: int, s: int) -> range:
    return range(s * shard_size, min(n, (s + 1) * shard_size))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)  # a kill mid-write never leaves a truncated file under the real name


def save_pngs(out: Path, images: np.ndarray, first: int) -> None:
    """One PNG per image of a shard, named by the image's index."""
    from PIL import Image

    for k, img in enumerate(images):
        _atomic_write(
            out / PNG_DIR / f"{first + k:06d}.png",
            lambda p, img=img: Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(
                p, format="PNG"
            ),
        )


def prepare(out: Path, key: dict, overwrite: bool) -> None:
    """Start a run folder or resume one made with the same key; a different key is refused
    (or, with overwrite, the folder's samples are removed)."""
    from extract.store.schema import FeatureStore, StoreError, is_store

    store = out / STORE_NAME
    old = None
    if (out / KEY_FILE).is_file():
        try:
            old = json.loads((out / KEY_FILE).read_text()).get("key")
        except ValueError:
            old = None
    elif is_store(store, created=False):
        try:
            old = FeatureStore.open(store).attrs.get("key")
        except (StoreError, OSError, ValueError):
            old = None
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a samples folder; choose another --out")
    if old is not None and old != key:
        if not overwrite:
            changed = sorted(k for k in set(key) | set(old) if old.get(k) != key.get(k))
            raise ValueError(
                f"{out} holds samples made with other arguments ({', '.join(changed)}); use --overwrite or another --out"
            )
        shutil.rmtree(out / PNG_DIR, ignore_errors=True)
        FeatureStore.remove(store)
    for stale in (
        out / KEY_FILE,
        *out.glob("samples_*.npz"),
    ):  # the run is not finished until they are written again
        stale.unlink(missing_ok=True)
    (out / PNG_DIR).mkdir(parents=True, exist_ok=True)


def assemble(out: Path, n: int, conditional: bool) -> Path:
    """All images in one guided-diffusion sample file (arr_0, and arr_1 when conditional), read from the store."""
    from extract.store.schema import open_complete

    store = open_complete(out / STORE_NAME)
    images = np.asarray(store.array(IMAGE_KEY)[:]).astype(np.uint8)
    arrays = {"arr_0": images, **({"arr_1": store.labels().astype(np.int64)} if conditional else {})}
    path = out / f"samples_{'x'.join(map(str, images.shape))}.npz"
    _atomic_write(path, lambda p: _save_npz(p, arrays))
    return path


def sample(cfg: SampleConfig, world=None) -> str:
    """Draw (or finish drawing) cfg.n images into cfg.out; returns a one-line summary.
    Collective under torchrun (the world comes from its environment unless given): each rank
    draws its own shards, rank 0 writes the sample file and the provenance."""
    from extract.store.dist import close_world, init_world, pick_device

    preset = get_preset(cfg.model)
    check_config(cfg, preset)
    own_world = world is None
    world = world or init_world(pick_device(cfg.device))
    try:
        return _sample(
            cfg, preset, world, pick_device(cfg.device, world if hasattr(world, "local_rank") else None)
        )
    finally:
        if own_world:
            close_world(world)


def _sample(cfg: SampleConfig, preset: ModelPreset, world, device: torch.device) -> str:
    from extract.store import progress
    from extract.store.provenance import provenance
    from extract.store.schema import FeatureStore, StoreLock
    from extract.store.writer import StorePlan, write_store

    started = time.perf_counter()
    model, weights = load_model(cfg, preset)
    model = model.to(device)
    key = sampling_key(cfg, preset, weights, device)
    out = Path(cfg.out)
    lock = None
    try:
        error = None
        if world.is_main:
            try:
                lock = StoreLock(out).acquire()
                prepare(out, key, cfg.overwrite)
            except ValueError as e:
                error = str(e)
        error = world.broadcast(error)
        if error:
            raise ValueError(error)
        diffusion = respaced_diffusion(preset, cfg.steps, cfg.sampler)
        labels = labels_for(cfg, preset, range(cfg.n))
        drawn = {"name": "samples", "n": cfg.n, "sampler": cfg.sampler, "steps": cfg.steps, "seed": cfg.seed}
        made = provenance(
            "samples",
            preset.name,
            cfg,
            drawn,
            weights=weights,
            torch_version=torch.__version__,
            stage="generate",
        )
        plan = StorePlan(
            out=out / STORE_NAME,
            key=key,
            compatible=("model", "weights"),
            provenance=made,
            row_shapes={IMAGE_KEY: (preset.image_size, preset.image_size, preset.in_channels)},
            ids=[f"{i:06d}" for i in range(cfg.n)],
            labels=np.asarray(labels if labels is not None else [0] * cfg.n, np.int64),
            index=np.arange(cfg.n),
            shard_rows=cfg.shard_size,
        )

        ours = {"drawn": 0}  # this rank's images

        def fill(store: FeatureStore, shards: list[int]) -> int:
            todo = ours["drawn"] = sum(len(store.shard_rows(s)) for s in shards)
            desc = f"sample {preset.name}" + (f" rank {world.rank}" if world.size > 1 else "")
            lines = progress.Lines(cfg.progress, desc, todo, "img")
            with progress.bar(cfg.progress, total=todo, unit="img", desc=desc, position=world.rank) as bar:
                for s in shards:
                    rows = store.shard_rows(s)
                    batches = []
                    for a in range(rows.start, rows.stop, cfg.batch_size):
                        idx = list(range(a, min(a + cfg.batch_size, rows.stop)))
                        batches.append(
                            draw(
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
                        )
                        bar.update(len(idx))
                    images = np.concatenate(batches)
                    save_pngs(
                        out, images, rows.start
                    )  # before the shard's done marker: a done shard has its PNGs
                    store.write_shard(s, {IMAGE_KEY: images.astype(np.float16)}, np.ones(len(rows), bool))
                    lines.add(len(rows), f"shard {s}")
            return todo

        written = write_store(plan, fill, world, started=started)
        seconds = round(time.perf_counter() - started, 2)
        if not world.is_main:
            return f"rank {world.rank}: {ours['drawn']} images drawn"
        npz = assemble(out, cfg.n, labels is not None)
        provenance = {
            "model": preset.name,
            "checkpoint": weights.get("checkpoint"),
            "checkpoint_sha256": weights.get("sha256"),
            "weights": weights["label"],
            "steps": cfg.steps,
            "sampler": cfg.sampler,
            "eta": cfg.eta,
            "seed": cfg.seed,
            "n": cfg.n,
            "samples": npz.name,
            "sha256": file_sha256(npz),
            "store": STORE_NAME,
            "version": __version__,
            "torch_version": torch.__version__,
            "device": str(device),
            "world_size": world.size,
            "last_run": {"images": written.images, "seconds": seconds, "batch_size": cfg.batch_size},
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        }
        _atomic_write(
            out / KEY_FILE,
            lambda p: p.write_text(
                json.dumps({"key": key, "complete": True, "provenance": provenance}, indent=1) + "\n"
            ),
        )
        drawn = written.images
        rate = f", {drawn / seconds:.3f} images/s" if drawn else ""
        return f"{npz}: {cfg.n} images ({drawn} drawn now in {seconds} s{rate}), {preset.name} {weights['label']}, {cfg.sampler} {cfg.steps} steps, seed {cfg.seed}"
    finally:
        if lock is not None:
            lock.release()


# ---------------------------------------------------------------- the model card's grid
def parse_class_label(text: str | None) -> int | None:
    """`--class-label 207` -> 207; `all` or nothing -> None (class i % 1000 for image i)."""
    if text is None or str(text).strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--class-label {text!r}: expected a class number or 'all'") from None


def samples(
    preset: ModelPreset, model: torch.nn.Module, n: int, seed: int, steps: int = 250, sampler: str = "ddpm"
) -> np.ndarray:
    """Images 0..n-1 of `seed` as uint8 (n, S, S, C): the first n images of a run with that seed."""
    cfg = SampleConfig(out=Path("."), model=preset.name, n=n, steps=steps, sampler=sampler, seed=seed)
    return draw(
        preset,
        model,
        list(range(n)),
        labels_for(cfg, preset, range(n)),
        steps=steps,
        sampler=sampler,
        seed=seed,
    )


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
            draw(
                preset,
                model,
                list(range(a, min(a + cfg.batch_size, cfg.n))),
                labels_for(cfg, preset, range(a, min(a + cfg.batch_size, cfg.n))),
                steps=cfg.steps,
                sampler=cfg.sampler,
                eta=cfg.eta,
                seed=cfg.seed,
                device=device,
                dtype=cfg.dtype,
                clip=cfg.clip,
                diffusion=diffusion,
            )
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
