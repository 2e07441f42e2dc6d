"""Staged networks in the feature schema: one family for every small image network whose
blocks are a list of its modules, read from a weights file, so probe and analysis read each
network's layers as any store.

A row of NETWORKS says how to load the network from a weights file (weights-only), which of
its modules are blocks 1..L in order, how an output becomes an (N, C, H, W) map, and what the
store key records of the model. The images go through extraction's preprocessing at the
row's size and channels ([-1, 1]) and through the network in eval mode; each block's output
is pooled with the --pool options. Keys are (t=0, b, pool): there is no noise.
- `bigan-encoder` (`bigan-features`): the BiGAN's encoder E (extract.models.bigan_nets),
  b=1..3 its three conv stages, b=4 the code z as a (z_dim, 1, 1) map;
- `fmnist-classifier` (`classifier-layers`): the supervised SmallCNN (extract.models.classifier),
  b=1..3 the three stages of `body` (32x16x16, 64x8x8, 128x4x4), b=4 `embed` (the 128 features
  `features --features classifier:FILE` writes) and b=5 the logits, both as (C, 1, 1) maps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from extract.checks import row_shapes
from extract.data.selection import dataset_record, select_data
from extract.data.sources import PREPROCESSING, FeatureInput
from extract.models.adm_blocks import BlockInfo
from extract.models.network_store import capture, network_fill
from extract.models.weights import weights_record
from extract.store.config import DataSelection, StoreOptions, json_roundtrip, option
from extract.store.dist import pick_device
from extract.store.provenance import provenance
from extract.store.schema import pool_label
from extract.store.writer import StorePlan, write_store

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # extract/weights


def as_map(output: torch.Tensor) -> torch.Tensor:
    """A block output as (N, C, H, W): conv maps pass through, a vector (N, C) becomes (N, C, 1, 1)."""
    return output if output.dim() == 4 else output[:, :, None, None]


@dataclass(frozen=True)
class StagedNetwork:
    title: str  # as messages name it
    kind: str  # the provenance kind of its stores
    # file -> (network in eval mode, block modules, model record)
    load: Callable[[Path], tuple[torch.nn.Module, list[torch.nn.Module], dict]]
    image_size: int = 32
    channels: int = 1
    default_weights: Path | None = None
    weights_hint: str = "a weights file"
    to_map: Callable[[torch.Tensor], torch.Tensor] = as_map
    # what blocks 1..L are, by name: written into each store's provenance ("layers"), so probe
    # and analysis name a block by its layer (a classifier's "embedding", not t0/b4)
    layers: tuple[str, ...] = ()


def _bigan_encoder(path: Path):
    from extract.models.bigan_nets import CHANNELS, IMAGE_SIZE, load_bigan

    model = load_bigan(path)
    encoder = model.encoder.eval()
    return (
        encoder,
        encoder.blocks(),
        {
            "name": "bigan-encoder",
            "image_size": IMAGE_SIZE,
            "in_channels": CHANNELS,
            "arch": model.arch.to_dict(),
        },
    )


CLASSIFIER_BLOCKS = ("body.0", "body.1", "body.2", "embed", "head")


def _fmnist_classifier(path: Path):
    from extract.models.classifier import CHANNELS, IMAGE_SIZE, load_classifier

    model, _ = load_classifier(path)
    blocks = [model.get_submodule(name) for name in CLASSIFIER_BLOCKS]
    return (
        model,
        blocks,
        {
            "name": "fmnist-classifier",
            "image_size": IMAGE_SIZE,
            "in_channels": CHANNELS,
            "arch": "SmallCNN",
            "blocks": list(CLASSIFIER_BLOCKS),
        },
    )


NETWORKS: dict[str, StagedNetwork] = {
    "bigan-encoder": StagedNetwork(
        "BiGAN encoder",
        "bigan",
        _bigan_encoder,
        weights_hint="a BiGAN exported by `export-bigan`",
        layers=("conv stage 1", "conv stage 2", "conv stage 3", "code z"),
    ),
    "fmnist-classifier": StagedNetwork(
        "Fashion-MNIST classifier",
        "classifier-layers",
        _fmnist_classifier,
        default_weights=WEIGHTS_DIR / "fmnist-classifier.pt",
        weights_hint="a SmallCNN state_dict (`train-classifier`)",
        layers=("conv stage 1", "conv stage 2", "conv stage 3", "embedding", "logits"),
    ),
}


@dataclass(frozen=True)
class StagedConfig:
    store: StoreOptions
    selection: DataSelection = DataSelection()
    # a row of NETWORKS (BiGAN stores made before this field recorded none)
    network: str = option("bigan-encoder", "the staged network", choices=tuple(NETWORKS))
    weights: Path | None = option(None, "its weights file [default: the network's own, if it has one]")
    blocks: tuple[int, ...] = option((), "blocks 1..L of the network [default: all]", flags=("-b", "--block"))
    pools: tuple[int | None, ...] = option(
        (1, None), "pool sizes p (p x p), or 'full' for the whole map", flags=("--pool",)
    )
    skip_small_maps: bool = option(
        False, "leave out (b, pool) pairs whose pool exceeds the block's map, instead of refusing"
    )
    seed: int = option(0, "seeds --limit")
    batch_size: int = option(256, "images loaded at once (speed only)", min=1)
    micro_batch: int = option(
        32,
        "images per forward, the last group zero-padded (in the store key; values do not depend on "
        "--batch-size)",
        min=1,
    )
    device: str | None = option("cpu", "cpu, cuda, cuda:1 ...")


def network_of(name: str) -> StagedNetwork:
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown staged network {name!r}; choose one of: {', '.join(NETWORKS)}") from None


# the key fields that define what a staged network's store's features mean
STAGED_COMPATIBLE = ("model", "weights", "preprocessing", "device_type")


def extract_staged(cfg: StagedConfig) -> str:
    """Write (or resume) the chosen blocks' pooled outputs of the config's network for a split as a store."""
    started = time.perf_counter()
    net = network_of(cfg.network)
    path = cfg.weights if cfg.weights is not None else net.default_weights
    if path is None:
        raise ValueError(f"give --weights FILE ({net.weights_hint})")
    model, blocks, record = net.load(Path(path))
    chosen = tuple(sorted(set(cfg.blocks))) or tuple(range(1, len(blocks) + 1))
    for b in chosen:
        if not 1 <= b <= len(blocks):
            raise ValueError(f"block {b} is outside 1..{len(blocks)} for the {net.title}")
    weights = weights_record(path)
    source, rows, dataset = select_data(cfg.selection, cfg.seed)
    device = pick_device(cfg.device)
    model.to(device)
    images = FeatureInput(source, net.image_size, net.channels)

    def maps_of(x: torch.Tensor) -> dict[int, torch.Tensor]:
        return capture(model, blocks, x, chosen, net.to_map)

    probe_maps = maps_of(torch.zeros(1, net.channels, net.image_size, net.image_size, device=device))
    table = [
        BlockInfo(b, f"block {b}", type(blocks[b - 1]).__name__, *probe_maps[b].shape[1:]) for b in chosen
    ]
    shapes = row_shapes(None, chosen, (0,), cfg.pools, cfg.skip_small_maps, table=table)
    if not shapes:
        raise ValueError("every chosen (block, pool) pair has a pool larger than its map")
    key = {
        "model": record,
        "weights": weights,
        "preprocessing": PREPROCESSING,
        "dtype": "fp32",
        "class_label": None,
        "micro_batch": cfg.micro_batch,
        "device_type": device.type,
        "seed": cfg.seed,
        "limit": cfg.selection.limit,
        "dataset": dataset,
        "blocks": list(chosen),
        "pools": list(cfg.pools),
    }
    if cfg.skip_small_maps:  # only when set, so stores made before the option keep their key
        key["skip_small_maps"] = True
    made = provenance(
        net.kind,
        record["name"],
        cfg,
        dataset_record(source, rows, dataset),
        weights=weights,
        torch_version=torch.__version__,
        **({"layers": {str(b): net.layers[b - 1] for b in chosen}} if net.layers else {}),
    )
    plan = StorePlan(
        out=cfg.store.out,
        key=json_roundtrip(key),
        compatible=STAGED_COMPATIBLE,
        provenance=made,
        row_shapes=shapes,
        ids=[source.ids[i] for i in rows],
        labels=source.labels[rows],
        index=rows,
        shard_rows=cfg.store.shard_rows,
        overwrite=cfg.store.overwrite,
    )
    fill = network_fill(
        images, rows, shapes, maps_of, cfg.batch_size, device, cfg.store.progress, net.kind, cfg.micro_batch
    )
    written = write_store(plan, fill, started=started)
    pools = [pool_label(p) for p in cfg.pools]
    return (
        f"{written.store}: {len(rows)} images, {net.title} blocks {list(chosen)}, pools {pools} "
        f"({written.images} computed now)"
    )
