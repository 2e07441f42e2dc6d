"""The argument checks every diffusion family shares: blocks, the row shape of each key,
timesteps, pools, views, sizes, data and dtypes. Run before any model, data or store is touched."""

from __future__ import annotations

from extract.data.augment import check_augmentation
from extract.data.selection import check_selection
from extract.models import adm_blocks as blocks_mod
from extract.models.pooling import pooled_shape
from extract.store.config import FORWARD_DTYPES, AtMost, ExtractConfig
from extract.store.schema import STORE_DTYPES, FeatureKey

ALL_BLOCKS = "all"


def resolve_blocks(cfg: ExtractConfig, preset) -> tuple[int, ...]:
    """The blocks to extract: as given, every block for "all", or the preset's default block."""
    chosen = cfg.blocks or (preset.default_block,)
    if ALL_BLOCKS in chosen:
        chosen = tuple(range(1, preset.num_blocks + 1))
    # a block may be named by its module path where the preset numbers modules
    names = tuple(getattr(preset, "block_names", ()))
    for b in (b for b in chosen if isinstance(b, str)):
        if b not in names:
            some = f"; valid names include {', '.join(names[:4])}, ..." if names else ""
            raise ValueError(
                f"block {b!r} is not a block of model {preset.name} "
                f"(give a number 1..{preset.num_blocks}{some})"
            )
    chosen = tuple(names.index(b) + 1 if isinstance(b, str) else b for b in chosen)
    for b in chosen:
        if not 1 <= b <= preset.num_blocks:
            raise ValueError(f"block {b} is outside 1..{preset.num_blocks} for model {preset.name}")
    return tuple(sorted(set(chosen)))


def row_shapes(
    preset, blocks: tuple[int, ...], ts, pools, skip_small: bool = False, table=None
) -> dict[FeatureKey, tuple[int, ...]]:
    """(C, h, w) of one cached row for every (t, b, pool), from the meta-device block table
    (guided-diffusion's, or the given one). `pools`: the pools of every block, or a dict of each
    block's own. A pool larger than a block's map is an error, or with skip_small that pair is
    left out."""
    table = {info.b: info for info in (table or blocks_mod.block_table(preset))}
    shapes = {}
    for b in blocks:
        info = table[b]
        for p in pools[b] if isinstance(pools, dict) else pools:
            if isinstance(p, AtMost):  # pooled where the map is larger than N, else whole
                p = p.n if max(info.height, info.width) > p.n else None
            try:
                shape = pooled_shape(info.channels, info.height, info.width, p)
            except ValueError as e:
                if skip_small:
                    continue
                raise ValueError(f"block {b}: {e} (--skip-small-maps leaves such pairs out)") from None
            for t in ts:
                shapes[FeatureKey(t, b, p)] = shape
    return shapes


def check_run_options(cfg: ExtractConfig, preset) -> None:
    """The checks every diffusion family shares: timesteps, pools, views, sizes, data, dtypes."""
    if not cfg.ts:
        raise ValueError("give at least one timestep --t")
    for t in cfg.ts:
        if not 0 <= t < preset.diffusion_steps:
            raise ValueError(f"timestep {t} is outside [0, {preset.diffusion_steps}) for model {preset.name}")
    if not cfg.pools:
        raise ValueError("give at least one --pool")
    if cfg.views < 1:
        raise ValueError(f"--views must be at least 1, got {cfg.views}")
    if min(cfg.store.shard_rows, cfg.batch_size, cfg.micro_batch) < 1 or cfg.workers < 0:
        raise ValueError(
            "--shard-rows, --micro-batch and --batch-size must be positive, --workers non-negative"
        )
    if cfg.store.shard_rows % cfg.micro_batch:
        raise ValueError(
            f"--shard-rows ({cfg.store.shard_rows}) must be a multiple of --micro-batch ({cfg.micro_batch})"
        )
    check_selection(cfg.selection)
    check_augmentation(cfg.aug, cfg.selection.split)
    if cfg.dtype not in FORWARD_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(FORWARD_DTYPES)}, got {cfg.dtype!r}")
    if cfg.store_dtype not in STORE_DTYPES:
        raise ValueError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}, got {cfg.store_dtype!r}")
