"""A run of N sampled images into one folder, resumably, through the one store writer.

A run writes into one folder:
  images.zarr             the images as a store (extract.store): one row per image, key
                          t0/b0/full of shape (H, W, C) holding the uint8 values (exact in
                          float16), labels the classes drawn; written by the one resumable
                          writer (lock, one shard of --shard-size images at a time, a done
                          marker per shard, `complete` last)
  png/000123.png          one file per image, written with its shard, before the shard's marker
  samples_NxHxWxC.npz     all images in guided-diffusion's sample format (arr_0, arr_1)
  samples.json            the key (everything that changes a pixel) and provenance, written last
The folder is checked and cleared under the store's lock (`write_store`'s `before`). A killed
run resumes by drawing exactly the shards without a done marker. Under torchrun each rank
samples the shards s with s % world_size == rank, as extraction does.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from extract import __version__
from extract.generate.sampling import (
    RESPACING,
    SampleConfig,
    check_config,
    draw_images,
    labels_for,
    load_model,
    respaced_diffusion,
)
from extract.models.adm_presets import ModelPreset, get_preset
from extract.models.weights import file_sha256
from extract.store import progress
from extract.store.dist import ProcessGroup, process_group
from extract.store.provenance import provenance
from extract.store.schema import FeatureKey, FeatureStore, StoreError, is_store, open_complete
from extract.store.writer import StorePlan, Written, write_store

KEY_FILE = "samples.json"
PNG_DIR, STORE_NAME = "png", "images.zarr"
IMAGE_KEY = FeatureKey(0, 0, None)  # the images' one array in the store: uint8 values, (H, W, C)


def sampling_key(cfg: SampleConfig, preset: ModelPreset, weights: dict, device: torch.device) -> dict:
    """Everything that changes a pixel. Batch size and progress do not (images are seeded one
    by one); the device type may, through kernel rounding, so it is part of the key."""
    if not preset.class_cond:
        classes = None
    else:
        classes = "i % 1000" if cfg.class_label is None else cfg.class_label
    key = {
        "model": preset.to_dict(),
        "weights": {k: v for k, v in weights.items() if k != "label"},
        "n": cfg.n,
        "steps": cfg.steps,
        "sampler": cfg.sampler,
        "respacing": RESPACING[cfg.sampler](cfg.steps),
        "eta": cfg.eta,
        "classes": classes,
        "seed": cfg.seed,
        "shard_size": cfg.shard_size,
        "dtype": cfg.dtype,
        "clip_denoised": cfg.clip,
        "device_type": device.type,
    }
    # through JSON, so it compares equal to the key read back from samples.json (tuples become lists)
    return json.loads(json.dumps(key))


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
        gray_or_rgb = img[..., 0] if img.shape[-1] == 1 else img
        _atomic_write(
            out / PNG_DIR / f"{first + k:06d}.png",
            lambda p, img=gray_or_rgb: Image.fromarray(img).save(p, format="PNG"),
        )


def prepare(out: Path, key: dict, overwrite: bool) -> None:
    """Start a run folder or resume one made with the same key; a different key is refused
    (or, with overwrite, the folder's samples are removed). Runs under the store's lock."""
    store = out / STORE_NAME
    lock = STORE_NAME + ".lock"
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
    elif out.exists() and any(p.name != lock for p in out.iterdir()):
        raise ValueError(f"{out} exists and is not a samples folder; choose another --out")
    if old is not None and old != key:
        if not overwrite:
            changed = sorted(k for k in set(key) | set(old) if old.get(k) != key.get(k))
            raise ValueError(
                f"{out} holds samples made with other arguments ({', '.join(changed)}); "
                "use --overwrite or another --out"
            )
        shutil.rmtree(out / PNG_DIR, ignore_errors=True)
        FeatureStore.remove(store)
    # the run is not finished until they are written again
    for stale in (out / KEY_FILE, *out.glob("samples_*.npz")):
        stale.unlink(missing_ok=True)
    (out / PNG_DIR).mkdir(parents=True, exist_ok=True)


def assemble(out: Path, n: int, conditional: bool) -> Path:
    """All images in one guided-diffusion sample file (arr_0, and arr_1 when conditional), read
    from the store."""
    store = open_complete(out / STORE_NAME)
    images = np.asarray(store.array(IMAGE_KEY)[:]).astype(np.uint8)
    arrays = {"arr_0": images, **({"arr_1": store.labels().astype(np.int64)} if conditional else {})}
    path = out / f"samples_{'x'.join(map(str, images.shape))}.npz"
    _atomic_write(path, lambda p: _save_npz(p, arrays))
    return path


def sample(cfg: SampleConfig) -> str:
    """Draw (or finish drawing) cfg.n images into cfg.out; returns a one-line summary.
    Collective under torchrun: each rank draws its own shards, rank 0 writes the sample file
    and the provenance."""
    preset = get_preset(cfg.model)
    check_config(cfg, preset)
    with process_group(cfg.device) as (world, device):
        return sample_into(cfg, preset, world, device)


def _plan(cfg: SampleConfig, preset: ModelPreset, weights: dict, key: dict) -> StorePlan:
    labels = labels_for(cfg, preset, range(cfg.n))
    drawn = {"name": "samples", "n": cfg.n, "sampler": cfg.sampler, "steps": cfg.steps, "seed": cfg.seed}
    made = provenance(
        "samples", preset.name, cfg, drawn, weights=weights, torch_version=torch.__version__, stage="generate"
    )
    return StorePlan(
        out=Path(cfg.out) / STORE_NAME,
        key=key,
        compatible=("model", "weights"),
        provenance=made,
        row_shapes={IMAGE_KEY: (preset.image_size, preset.image_size, preset.in_channels)},
        ids=[f"{i:06d}" for i in range(cfg.n)],
        labels=np.asarray(labels if labels is not None else [0] * cfg.n, np.int64),
        index=np.arange(cfg.n),
        shard_rows=cfg.shard_size,
    )


def _draw_shards(
    cfg: SampleConfig, preset: ModelPreset, model, device, world: ProcessGroup, store: FeatureStore, shards
) -> int:
    """The writer's fill: draw this rank's shards, each shard's PNGs before its done marker."""
    diffusion = respaced_diffusion(preset, cfg.steps, cfg.sampler)
    todo = sum(len(store.shard_rows(s)) for s in shards)
    desc = f"sample {preset.name}" + (f" rank {world.rank}" if world.size > 1 else "")
    lines = progress.Lines(cfg.progress, desc, todo, "img")
    with progress.bar(cfg.progress, total=todo, unit="img", desc=desc, position=world.rank) as bar:
        for s in shards:
            rows = store.shard_rows(s)
            batches = []
            for a in range(rows.start, rows.stop, cfg.batch_size):
                idx = list(range(a, min(a + cfg.batch_size, rows.stop)))
                batches.append(draw_images(cfg, preset, model, idx, device, diffusion))
                bar.update(len(idx))
            images = np.concatenate(batches)
            save_pngs(Path(cfg.out), images, rows.start)  # before the shard's done marker
            store.write_shard(s, {IMAGE_KEY: images.astype(np.float16)}, np.ones(len(rows), bool))
            lines.add(len(rows), f"shard {s}")
    return todo


def sample_into(cfg: SampleConfig, preset: ModelPreset, world: ProcessGroup, device: torch.device) -> str:
    """`sample` inside a process group: this rank's shards, and on rank 0 the sample file and
    samples.json."""
    started = time.perf_counter()
    model, weights = load_model(cfg, preset)
    model = model.to(device)
    key = sampling_key(cfg, preset, weights, device)
    out = Path(cfg.out)
    ours = {"drawn": 0}  # this rank's images

    def fill(store: FeatureStore, shards: list[int]) -> int:
        ours["drawn"] = _draw_shards(cfg, preset, model, device, world, store, shards)
        return ours["drawn"]

    written = write_store(
        _plan(cfg, preset, weights, key),
        fill,
        world,
        started,
        before=partial(prepare, out, key, cfg.overwrite),
    )
    seconds = round(time.perf_counter() - started, 2)
    if not world.is_main:
        return f"rank {world.rank}: {ours['drawn']} images drawn"
    npz = assemble(out, cfg.n, preset.class_cond)
    record = run_record(cfg, preset, weights, npz, written, seconds, str(device), world.size)
    _atomic_write(
        out / KEY_FILE,
        lambda p: p.write_text(
            json.dumps({"key": key, "complete": True, "provenance": record}, indent=1) + "\n"
        ),
    )
    drawn = written.images
    rate = f", {drawn / seconds:.3f} images/s" if drawn else ""
    return (
        f"{npz}: {cfg.n} images ({drawn} drawn now in {seconds} s{rate}), {preset.name} {weights['label']}, "
        f"{cfg.sampler} {cfg.steps} steps, seed {cfg.seed}"
    )


def run_record(
    cfg: SampleConfig,
    preset: ModelPreset,
    weights: dict,
    npz: Path,
    written: Written,
    seconds: float,
    device: str,
    world_size: int,
) -> dict:
    """samples.json's provenance: the weights, the sampler, the sample file's hash and this run."""
    return {
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
        "device": device,
        "world_size": world_size,
        "last_run": {"images": written.images, "seconds": seconds, "batch_size": cfg.batch_size},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
