"""The ADM family's run: validate, load the U-Net, create or resume the store, run the shards."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch

from extract.checks import check_run_options, resolve_blocks, row_shapes
from extract.data.selection import dataset_record, select_data
from extract.data.sources import PREPROCESSING
from extract.models.adm import load_unet, shipped_weights
from extract.models.adm_forward import UNET_COMPATIBLE, AdmForward
from extract.models.adm_options import AdmOptions, adm_preset
from extract.models.schedules import adm_preset_schedule
from extract.models.adm_presets import ModelPreset
from extract.shards import ShardJob, Summary, image_inputs, run_shards
from extract.store.config import ExtractConfig, class_label, json_roundtrip, pools_by_block, store_key
from extract.store.dist import process_group
from extract.store.provenance import provenance
from extract.store.schema import FeatureKey
from extract.store.writer import StorePlan, write_store


def validate_adm(
    cfg: ExtractConfig,
) -> tuple[ModelPreset, tuple[int, ...], dict[FeatureKey, tuple[int, ...]]]:
    """Every argument error, before any model, data or store is touched.
    Returns the preset, the sorted blocks and each key's row shape."""
    options: AdmOptions = cfg.options
    if options.model_flags and cfg.model != ExtractConfig.model:  # --model-flags stands in for --model
        raise ValueError(
            f"--model {cfg.model} and --model-flags exclude each other: --model-flags builds the U-Net "
            "itself; give one of them"
        )
    preset = adm_preset(cfg.model, options)
    check_run_options(cfg, preset)
    if preset.class_cond and not 0 <= class_label(cfg, preset) < 1000:
        raise ValueError(f"--class-label must be in [0, 1000), got {options.class_label}")
    if cfg.ckpt is None and not cfg.random_init:
        if not preset.shipped:
            raise ValueError(
                "no --ckpt given: pass a checkpoint file, or --random-init for a random-weight control"
            )
        shipped_weights(preset)  # raises when the shipped file is missing
    if cfg.ckpt is not None and cfg.random_init:
        raise ValueError("--ckpt and --random-init exclude each other")
    if cfg.ckpt is not None and not Path(cfg.ckpt).is_file():
        raise FileNotFoundError(f"checkpoint not found: {cfg.ckpt}")
    blocks = resolve_blocks(cfg, preset)
    # a pool larger than a map fails here
    shapes = row_shapes(preset, blocks, cfg.ts, pools_by_block(cfg, blocks), cfg.skip_small_maps)
    if not shapes:
        raise ValueError(f"every pool in {list(cfg.pools)} is larger than the maps of blocks {list(blocks)}")
    return preset, blocks, shapes


def extract_adm(cfg: ExtractConfig) -> Summary:
    """Run (or resume) one ADM extraction into cfg.store.out. Collective under torchrun."""
    started = time.perf_counter()
    preset, blocks, shapes = validate_adm(cfg)
    # the same cuDNN algorithms on every run: a row's bits do not depend on the run
    with process_group(cfg.device, deterministic=True) as (world, device):
        source, rows, dataset = select_data(cfg.selection, cfg.seed)
        model, weights = load_unet(preset, cfg.ckpt, random_init=cfg.random_init, seed=cfg.seed)
        model.requires_grad_(False).to(device)
        key = store_key(cfg, preset, blocks, weights, dataset, device.type, PREPROCESSING)
        key = json_roundtrip({**key, "noise_levels": adm_preset_schedule(preset).levels(cfg.ts)})
        made = provenance(
            "unet",
            preset.name,
            cfg,
            {**dataset_record(source, rows, dataset), "aug": cfg.aug},
            weights=weights,
            torch_version=torch.__version__,
        )
        plan = StorePlan(
            out=cfg.store.out,
            key=key,
            compatible=UNET_COMPATIBLE,
            provenance=made,
            row_shapes=shapes,
            ids=[source.ids[i] for i in rows],
            labels=source.labels[rows],
            index=rows,
            shard_rows=cfg.store.shard_rows,
            views=cfg.views,
            dtype=cfg.store_dtype,
            overwrite=cfg.store.overwrite,
            allow_mismatch=cfg.store.allow_mismatch,
        )

        job = ShardJob(
            forward=AdmForward(model, preset, class_label(cfg, preset)),
            inputs=image_inputs(source, preset, cfg),
            rows=rows,
            cfg=cfg,
            blocks=blocks,
            shapes=shapes,
            device=device,
            world=world,
        )
        written = write_store(plan, partial(run_shards, job), world, started)
        return Summary(
            written.store,
            written.images,
            time.perf_counter() - started,
            written.bytes,
            written.shards_done,
            written.shards_total,
            written.skipped,
        )
