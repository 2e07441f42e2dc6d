"""The BiGAN baseline's encoder in the feature schema, so probe and analysis read it as any store.

The images go through the preprocessing the BiGAN was trained on (the U-Net's: center crop to
32, grayscale, [-1, 1]) and then through E in eval mode. Blocks are E's stages
(extract.models.bigan_nets): b=1..3 the three conv stages' outputs, b=4 the code z as a
(z_dim, 1, 1) map; each pooled with the --pool options. Keys are (t=0, b, pool): no noise.
Weights come from a file `train-bigan` + `export-bigan` wrote, loaded weights-only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from extract.data.selection import dataset_record, select_data
from extract.data.sources import PREPROCESSING, FeatureInput
from extract.models.bigan_nets import CHANNELS, IMAGE_SIZE, Encoder, load_bigan
from extract.models.network_store import capture as network_capture
from extract.models.network_store import network_fill
from extract.models.pooling import pooled_shape
from extract.models.weights import weights_record
from extract.store.config import DataSelection, StoreOptions, json_roundtrip
from extract.store.dist import pick_device
from extract.store.provenance import provenance
from extract.store.schema import FeatureKey, pool_label
from extract.store.writer import StorePlan, write_store

NUM_BLOCKS = 4


@dataclass(frozen=True)
class BiganFeatureConfig:
    store: StoreOptions
    selection: DataSelection = DataSelection()
    weights: Path | None = None
    blocks: tuple[int, ...] = ()  # empty: all
    pools: tuple[int | None, ...] = (1, None)
    seed: int = 0
    batch_size: int = 256
    device: str | None = "cpu"


def as_map(output: torch.Tensor) -> torch.Tensor:
    """A stage output as (N, C, H, W): conv maps pass through, the code z (N, z) becomes (N, z, 1, 1)."""
    return output if output.dim() == 4 else output[:, :, None, None]


def capture(encoder: Encoder, x: torch.Tensor, wanted: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Outputs of the wanted blocks (1-based) of E on x, by forward hooks."""
    return network_capture(encoder, encoder.blocks(), x, wanted, as_map)


# the key fields that define what a BiGAN store's features mean
BIGAN_COMPATIBLE = ("model", "weights", "preprocessing", "device_type")


def extract_bigan(cfg: BiganFeatureConfig) -> str:
    """Write (or resume) the chosen encoder blocks' pooled outputs for a split as a store."""
    started = time.perf_counter()
    if cfg.weights is None:
        raise ValueError("give --weights FILE (a BiGAN exported by `export-bigan`)")
    chosen = tuple(sorted(set(cfg.blocks))) or tuple(range(1, NUM_BLOCKS + 1))
    for b in chosen:
        if not 1 <= b <= NUM_BLOCKS:
            raise ValueError(f"block {b} is outside 1..{NUM_BLOCKS} for the BiGAN encoder")
    model = load_bigan(cfg.weights)
    weights = weights_record(cfg.weights)
    encoder = model.encoder.eval()
    source, rows, dataset = select_data(cfg.selection, cfg.seed)
    device = pick_device(cfg.device)
    encoder.to(device)
    images = FeatureInput(source, IMAGE_SIZE, CHANNELS)
    probe_maps = capture(encoder, torch.zeros(1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE, device=device), chosen)
    shapes = {FeatureKey(0, b, p): pooled_shape(*probe_maps[b].shape[1:], p) for b in chosen for p in cfg.pools}
    key = {"model": {"name": "bigan-encoder", "image_size": IMAGE_SIZE, "in_channels": CHANNELS, "arch": model.arch.to_dict()}, "weights": weights,
           "preprocessing": PREPROCESSING, "dtype": "fp32", "class_label": None, "micro_batch": None, "device_type": device.type,
           "seed": cfg.seed, "limit": cfg.selection.limit, "dataset": dataset, "blocks": list(chosen), "pools": list(cfg.pools)}  # fmt: skip
    made = provenance("bigan", "bigan-encoder", cfg, dataset_record(source, rows, dataset), weights=weights, torch_version=torch.__version__)
    plan = StorePlan(out=Path(cfg.store.out), key=json_roundtrip(key), compatible=BIGAN_COMPATIBLE, provenance=made,
                     row_shapes=shapes, ids=[source.ids[i] for i in rows], labels=source.labels[rows], index=rows,
                     shard_rows=cfg.store.shard_rows, overwrite=cfg.store.overwrite)  # fmt: skip

    fill = network_fill(images, rows, shapes, lambda x: capture(encoder, x, chosen), cfg.batch_size, device, cfg.store.progress, "bigan")
    written = write_store(plan, fill, started=started)
    return f"{written.store}: {len(rows)} images, bigan encoder blocks {list(chosen)}, pools {[pool_label(p) for p in cfg.pools]} ({written.images} computed now)"
