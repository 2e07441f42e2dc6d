"""Extraction for any local diffusers denoiser (`--model diffusers --model-dir DIR`) and the
`sdxl` preset: the latent family's two stores (latent cache, then features), with the block
numbering, conditioning and capture of extract.models.diffusers_any."""

from __future__ import annotations

import time

from extract.checks import ALL_BLOCKS, check_run_options, resolve_blocks, row_shapes
from extract.models.adm_blocks import BlockInfo
from extract.models.diffusers_any import load_model, resolve_table
from extract.models.diffusers_cond import TEXT, kind_of, read_cond_file
from extract.models.diffusers_options import DiffusersOptions, diffusers_spec
from extract.models.diffusers_spec import DiffusersSpec
from extract.models.latent import libraries
from extract.models.latent_run import run_latent_stores
from extract.shards import Summary
from extract.store.config import ExtractConfig, pools_by_block

PIXELS = "pixels in [-1, 1], fp32 (no VAE)"


def block_table(spec: DiffusersSpec) -> list[BlockInfo]:
    """The numbered table of the denoiser's modules and their map shapes (meta device, no weights)."""
    return resolve_table(spec)[1]


def validate_diffusers(cfg: ExtractConfig) -> tuple[DiffusersSpec, tuple[int, ...], dict]:
    """Every argument error (and a folder that does not fit), before any work."""
    options: DiffusersOptions = cfg.options
    libraries()
    if options.model_dir is None:
        raise ValueError(
            f"--model {cfg.model} needs --model-dir DIR (a local diffusers folder: unet/ or transformer/, "
            "vae/, scheduler/, text encoders)"
        )
    if cfg.ckpt is not None:
        raise ValueError(
            f"--ckpt is not used with --model {cfg.model}: the denoiser's weights come from the folder "
            "(or --random-init)"
        )
    spec = diffusers_spec(cfg.model, options)
    named = tuple(b for b in cfg.blocks if isinstance(b, str) and b != ALL_BLOCKS)
    spec, table = resolve_table(spec, named)
    check_run_options(cfg, spec)
    needs = kind_of(spec.denoiser_class).needs(spec.denoiser)
    label = options.class_label
    if "class_labels" in needs:
        if label is None and spec.null_class is None:
            raise ValueError(
                f"{spec.denoiser_class} is class-conditional and its config has no null class: "
                "give --class-label"
            )
        top = spec.null_class if spec.null_class is not None else spec.denoiser.get("num_class_embeds", 1) - 1
        if label is not None and not 0 <= label <= top:
            raise ValueError(f"--class-label must be in [0, {top}], got {label}")
    elif label is not None:
        raise ValueError(f"{spec.denoiser_class} takes no class label: leave out --class-label")
    if not any(n in needs for n in TEXT) and (options.prompt or options.cond):
        raise ValueError(f"{spec.denoiser_class} takes no text: leave out --prompt and --cond")
    if options.cond is not None:
        read_cond_file(options.cond, needs)
    blocks = resolve_blocks(cfg, spec)
    shapes = row_shapes(spec, blocks, cfg.ts, pools_by_block(cfg, blocks), cfg.skip_small_maps, table=table)
    if not shapes:
        raise ValueError(f"every pool in {list(cfg.pools)} is larger than the maps of blocks {list(blocks)}")
    return spec, blocks, shapes


def extract_diffusers(cfg: ExtractConfig) -> Summary:
    """Run (or resume) one extraction into cfg.store.out, caching the VAE latents (pixels without a VAE)."""
    started = time.perf_counter()
    spec, blocks, shapes = validate_diffusers(cfg)

    def load():
        options: DiffusersOptions = cfg.options
        return load_model(
            spec,
            options.model_dir,
            random_init=cfg.random_init,
            seed=cfg.seed,
            prompt=options.prompt,
            class_label=options.class_label,
            cond_file=options.cond,
        )

    def key_extra(model) -> dict:
        extra = {
            "conditioning": model.conditioning,
            "modules": {str(b): spec.block_names[b - 1] for b in blocks},
        }
        return extra if spec.vae else {**extra, "encoding": PIXELS}

    return run_latent_stores(
        cfg, started, spec, blocks, shapes, load, lambda model: model, key_extra, kind="diffusers"
    )
