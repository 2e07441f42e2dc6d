"""Extraction for latent diffusion presets (SD U-Nets, DiT): VAE latents once, then features.

The VAE encode is the costly first step and does not depend on t, b, pool, the noise seed
or the denoiser, so a run writes two stores, both through the one store writer (lock,
resume, key check, done markers):

1. the latent cache: each image's latent (each view's, with --aug) in float32, keyed by all a
   latent depends on (VAE weights, resolution, preprocessing, images, crops, micro-batch).
   By default it lives at latents/<preset>-<hash of that key>.zarr beside --out, so later
   runs at other t or b into other stores find it and encode nothing.
2. the feature store, as for ADM: each shard reads its rows' latents, noises them with
   eps(seed, index, t, view), runs the denoiser on fixed-size micro-batches, stops after the
   deepest requested block, and pools. A cached latent is bit-identical to a fresh encode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from extract.checks import check_run_options, resolve_blocks, row_shapes
from extract.data.selection import dataset_record, select_data
from extract.data.sources import PREPROCESSING
from extract.models.adm_forward import UNET_COMPATIBLE
from extract.models.latent import FAMILIES as LATENT_FAMILIES
from extract.models.latent import LatentModel, check_sources, libraries, load_latent_model
from extract.models.latent_blocks import capture_latent, latent_block_table
from extract.models.latent_options import LatentOptions, latent_preset
from extract.models.latent_presets import LatentPreset
from extract.models.noise import latent_q_sample
from extract.models.schedules import schedule_from_record
from extract.shards import Batch, Forward, ShardJob, Summary, image_inputs, run_shards
from extract.store.config import ExtractConfig, class_label, json_roundtrip, pools_by_block, store_key
from extract.store.dist import process_group
from extract.store.location import Location, store_location
from extract.store.provenance import provenance
from extract.store.schema import CONTENT_BYTES, FeatureKey, FeatureStore
from extract.store.writer import StorePlan, write_store

# the cache's one array: t=0 (no noise), b=0 (the denoiser's input), the whole map
LATENT_KEY = FeatureKey(0, 0, None)
ENCODING = "VAE posterior mean, (mean - shift_factor) * scaling_factor, fp32"
LATENT_COMPATIBLE = ("model", "weights", "preprocessing", "encoding", "device_type")
FEATURE_COMPATIBLE = (*UNET_COMPATIBLE, "conditioning", "schedule")


def validate_latent(
    cfg: ExtractConfig,
) -> tuple[LatentPreset, tuple[int, ...], dict[FeatureKey, tuple[int, ...]]]:
    """Every argument error (and a denoiser file or folder that does not fit), before any work."""
    options: LatentOptions = cfg.options
    preset = latent_preset(cfg.model, options)
    libraries()  # a missing extra is the first thing to say
    check_run_options(cfg, preset)
    if preset.class_cond:
        label = class_label(cfg, preset)
        if not 0 <= label <= preset.null_class:
            raise ValueError(
                f"--class-label must be in [0, {preset.null_class}] ({preset.null_class}: no class), "
                f"got {label}"
            )
        if options.prompt:
            raise ValueError(f"{preset.name} is class-conditional: use --class-label, not --prompt")
    elif options.class_label is not None:
        raise ValueError(f"{preset.name} is conditioned on a prompt (--prompt), not on --class-label")
    check_sources(preset, options.model_dir, cfg.ckpt, cfg.random_init)
    blocks = resolve_blocks(cfg, preset)
    shapes = row_shapes(
        preset,
        blocks,
        cfg.ts,
        pools_by_block(cfg, blocks),
        cfg.skip_small_maps,
        table=latent_block_table(preset),
    )
    if not shapes:
        raise ValueError(f"every pool in {list(cfg.pools)} is larger than the maps of blocks {list(blocks)}")
    return preset, blocks, shapes


@runtime_checkable
class Encoder(Forward, Protocol):
    """A latent family's forward, which also encodes images into the latents it noises."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images x (G, 3, S, S) in [-1, 1] -> latents (G, C, h, w) float32."""
        ...


@dataclass
class LatentForward:
    """How the shard loop encodes images, noises latents and reads the denoiser's blocks
    (cf. extract.models.adm_forward.AdmForward); an `Encoder`."""

    model: LatentModel

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)

    def noised(self, z0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        return latent_q_sample(self.model.abar, z0, t, eps)

    def capture(self, x_t: torch.Tensor, steps: torch.Tensor, blocks) -> dict[int, torch.Tensor]:
        cond = self.model.batch_cond(x_t.shape[0])
        return capture_latent(self.model.denoiser, self.model.preset, x_t, steps, cond, blocks)


def encode_batch(batch: Batch) -> dict[FeatureKey, np.ndarray]:
    """The latent cache's `compute`: images (N, [V,] 3, S, S) in [-1, 1] -> {LATENT_KEY: latents}."""
    job = batch.job
    out = encode_images(job.forward, batch.x0, job.cfg.micro_batch, job.shapes[LATENT_KEY])
    return {LATENT_KEY: out if job.cfg.views > 1 else out[:, 0]}


def encode_images(encoder: Encoder, x0: torch.Tensor, micro_batch: int, shape: tuple[int, ...]) -> np.ndarray:
    """Images x0 (N, [V,] 3, S, S) in [-1, 1] -> latents (N, V, C, h, w) float32, in zero-padded
    micro-batches of `micro_batch` (a fixed shape: bits independent of batching)."""
    g, n = micro_batch, x0.shape[0]
    views = x0.shape[1] if x0.dim() == 5 else 1
    out = np.empty((n, views, *shape), dtype=np.float32)
    for start in range(0, n, g):
        stop = min(start + g, n)
        x = x0[start:stop]
        if x.shape[0] < g:
            x = torch.cat([x, x.new_zeros((g - x.shape[0], *x.shape[1:]))])
        for v in range(views):
            z = encoder.encode(x[:, v] if x.dim() == 5 else x)
            out[start:stop, v] = z[: stop - start].cpu().numpy()
    return out


class LatentInput(torch.utils.data.Dataset):
    """Cached latents by dataset index: (index, latent ([V,] C, h, w) float32, error or "", pixel
    digest (16,) uint8 of the image it was encoded from)."""

    def __init__(self, store: FeatureStore):
        self.array = store.array(LATENT_KEY)
        self.row = {int(i): r for r, i in enumerate(store.index())}
        self.valid, self.ids = store.valid(), store.ids()
        digests = store.content_hashes()
        self.digests = digests if digests is not None else np.zeros((len(self.row), CONTENT_BYTES), np.uint8)

    def __len__(self) -> int:
        return len(self.row)

    def __getitems__(self, indices: list[int]) -> list[tuple[int, torch.Tensor, str, torch.Tensor]]:
        # a loader batch never straddles two shards, so its rows are one contiguous read
        rows = [self.row[int(i)] for i in indices]
        lo = min(rows)
        block = self.array[lo : max(rows) + 1]
        return [
            (
                int(i),
                torch.from_numpy(np.ascontiguousarray(block[r - lo])),
                "" if self.valid[r] else f"{self.ids[r]}: unreadable when its latents were cached",
                torch.from_numpy(self.digests[r].copy()),
            )
            for i, r in zip(indices, rows)
        ]

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]


def latent_key(
    cfg: ExtractConfig, preset: LatentPreset, model: LatentModel, dataset: dict, device: torch.device
) -> dict:
    """Everything a cached latent depends on, and nothing else (not t, b, pool, noise or denoiser)."""
    crops = cfg.aug != "none"
    return {
        "model": {"name": preset.name, "image_size": preset.image_size, "vae": preset.vae},
        "weights": model.vae_weights,
        "encoding": ENCODING,
        "preprocessing": PREPROCESSING,
        "dataset": dataset,
        "aug": cfg.aug,
        "views": cfg.views if crops else 1,
        "seed": cfg.seed if crops else None,
        "micro_batch": cfg.micro_batch,
        "device_type": device.type,
    }


def default_latents_path(out: Location, preset: LatentPreset, key: dict) -> Location:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return store_location(out).parent / "latents" / f"{preset.name}-{digest}.zarr"


def extract_latent(cfg: ExtractConfig) -> Summary:
    """Run (or resume) one extraction of a latent preset into cfg.store.out, caching latents."""
    started = time.perf_counter()
    preset, blocks, shapes = validate_latent(cfg)

    def load() -> LatentModel:
        return load_latent_model(
            preset,
            model_dir=cfg.options.model_dir,
            ckpt=cfg.ckpt,
            random_init=cfg.random_init,
            seed=cfg.seed,
            prompt=cfg.options.prompt,
            class_label=class_label(cfg, preset),
        )

    def key_extra(model) -> dict:
        condition = LATENT_FAMILIES[preset.family].key_condition
        return {"conditioning": condition(cfg.options.prompt, class_label(cfg, preset))}

    return run_latent_stores(cfg, started, preset, blocks, shapes, load, LatentForward, key_extra)


def run_latent_stores(
    cfg: ExtractConfig, started: float, preset, blocks, shapes, load, forward, key_extra, kind: str = "latent"
) -> Summary:
    """The latent cache, then the feature store from it. `load()` -> the model (with .to, .encode,
    .vae, .schedule, .weights, .vae_weights); `forward(model)` -> the `Encoder` the shard loop
    encodes, noises and captures with; `key_extra(model)` -> what the feature store's key adds
    (its conditioning)."""
    # the same cuDNN algorithms on every run: a row's bits do not depend on the run
    with process_group(cfg.device, deterministic=True) as (world, device):
        source, rows, dataset = select_data(cfg.selection, cfg.seed)
        model = load().to(device)
        steps = model.schedule["steps"]
        if max(cfg.ts) >= steps:
            raise ValueError(
                f"timestep {max(cfg.ts)} is outside [0, {steps}) of the model folder's scheduler"
            )
        common = dict(
            ids=[source.ids[i] for i in rows],
            labels=source.labels[rows],
            index=rows,
            shard_rows=cfg.store.shard_rows,
            overwrite=cfg.store.overwrite,
        )
        record = dataset_record(source, rows, dataset)

        # 1. the latent cache
        lkey = json_roundtrip(latent_key(cfg, preset, model, dataset, device))
        given = cfg.options.latents
        lpath = (
            store_location(given) if given is not None else default_latents_path(cfg.store.out, preset, lkey)
        )
        lcfg = dataclasses.replace(cfg, views=lkey["views"], store_dtype="float32")
        lshape = {LATENT_KEY: (preset.latent_channels, preset.latent_size, preset.latent_size)}
        lprov = provenance(
            "latents",
            preset.name,
            cfg,
            {**record, "aug": cfg.aug},
            weights=model.vae_weights,
            torch_version=torch.__version__,
        )
        lplan = StorePlan(
            out=lpath,
            key=lkey,
            compatible=LATENT_COMPATIBLE,
            provenance=lprov,
            row_shapes=lshape,
            views=lkey["views"],
            dtype="float32",
            **common,
        )

        encoder = forward(model)
        encode = ShardJob(
            forward=encoder,
            inputs=image_inputs(source, preset, lcfg),
            rows=rows,
            cfg=lcfg,
            blocks=(),
            shapes=lshape,
            device=device,
            world=world,
            compute=encode_batch,
        )
        encoded = write_store(lplan, partial(run_shards, encode), world)
        model.vae.to("cpu")  # the denoiser has the device to itself from here on

        # 2. the features, from the cached latents
        key = store_key(cfg, preset, blocks, model.weights, dataset, device.type, PREPROCESSING)
        levels = schedule_from_record(model.schedule).levels(cfg.ts)
        key.update(schedule=model.schedule, noise_levels=levels, encoding=ENCODING)
        # the family's conditioning (and what else it records; it may restate the encoding)
        key.update(key_extra(model))
        made = provenance(
            kind,
            preset.name,
            cfg,
            {**record, "aug": cfg.aug},
            weights=model.weights,
            torch_version=torch.__version__,
            latents=str(lpath),
        )
        plan = StorePlan(
            out=cfg.store.out,
            key=json_roundtrip(key),
            compatible=FEATURE_COMPATIBLE,
            provenance=made,
            row_shapes=shapes,
            views=cfg.views,
            dtype=cfg.store_dtype,
            allow_mismatch=cfg.store.allow_mismatch,
            **common,
        )
        job = ShardJob(
            forward=encoder,
            inputs=LatentInput(FeatureStore.open(lpath)),
            rows=rows,
            cfg=cfg,
            blocks=blocks,
            shapes=shapes,
            device=device,
            world=world,
            workers=0,
        )
        written = write_store(plan, partial(run_shards, job), world, started)
        reused = len(rows) - encoded.images
        note = f"latents {lpath}: {encoded.images} encoded now, {reused} reused from the cache"
        return Summary(
            written.store,
            written.images,
            time.perf_counter() - started,
            written.bytes,
            written.shards_done,
            written.shards_total,
            written.skipped,
            note=note,
        )
