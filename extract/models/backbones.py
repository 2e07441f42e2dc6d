"""Standard backbones in the feature schema, for CKA against diffusion features.

`torchvision:resnet50` (b=1..4: the outputs of layer1..layer4) and `torchvision:vit_b_16`
(b=1..12: the outputs of encoder blocks 1..12, patch tokens as a 14x14 map, the class token
dropped) run on the same images as the U-Net, preprocessed the same way (center crop to
224) and then normalised with ImageNet's mean and std. Weights come from a local state_dict
file (`--weights`, loaded weights-only) or are random (`--random-init`); nothing is
downloaded. Keys are (t=0, b, pool): there is no noise.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from extract.data.selection import dataset_record, select_data
from extract.data.sources import PREPROCESSING, FeatureInput
from extract.models.network_store import capture as network_capture
from extract.models.network_store import network_fill
from extract.models.pooling import pooled_shape
from extract.models.weights import CheckpointError, file_sha256, read_state_dict
from extract.models.backbone_options import BackboneConfig
from extract.store.config import json_roundtrip
from extract.store.dist import pick_device
from extract.store.provenance import provenance
from extract.store.schema import FeatureKey, pool_label
from extract.store.writer import StorePlan, write_store

IMAGE_SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _resnet50() -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    return model, [model.layer1, model.layer2, model.layer3, model.layer4]


def _vit_b_16() -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    import torchvision

    model = torchvision.models.vit_b_16(weights=None)
    return model, list(model.encoder.layers)


BACKBONES: dict[str, Callable[[], tuple[torch.nn.Module, list[torch.nn.Module]]]] = {
    "torchvision:resnet50": _resnet50,
    "torchvision:vit_b_16": _vit_b_16,
}


def as_map(output: torch.Tensor) -> torch.Tensor:
    """A block output as (N, C, H, W): conv maps pass through; ViT tokens (N, 1 + HW, C)
    lose the class token and are laid out on their square grid."""
    if output.dim() == 4:
        return output
    tokens = output[:, 1:]
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.transpose(1, 2).reshape(output.shape[0], output.shape[2], side, side)


def capture(
    model: torch.nn.Module, blocks: list[torch.nn.Module], x: torch.Tensor, wanted: tuple[int, ...]
) -> dict[int, torch.Tensor]:
    """Outputs of the wanted blocks (1-based) as (N, C, H, W) maps, by forward hooks."""
    return network_capture(model, blocks, x, wanted, as_map)


def load_backbone(cfg: BackboneConfig) -> tuple[torch.nn.Module, list[torch.nn.Module], dict]:
    try:
        factory = BACKBONES[cfg.model]
    except KeyError:
        raise ValueError(f"unknown backbone {cfg.model!r}; choose one of: {', '.join(BACKBONES)}") from None
    if (cfg.weights is None) == (not cfg.random_init):
        raise ValueError("give exactly one of --weights FILE and --random-init for a backbone")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, blocks = factory()
    if cfg.weights is None:
        return model.eval(), blocks, {"random_init": True, "init_seed": cfg.seed}
    state = read_state_dict(cfg.weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{cfg.weights} does not fit {cfg.model}: {len(missing)} missing keys, "
            f"{len(unexpected)} unexpected keys"
        )
    return (
        model.eval(),
        blocks,
        {"random_init": False, "checkpoint": Path(cfg.weights).name, "sha256": file_sha256(cfg.weights)},
    )


# the key fields that define what a backbone store's features mean
BACKBONE_COMPATIBLE = ("model", "weights", "preprocessing", "device_type")


def extract_backbone(cfg: BackboneConfig) -> str:
    """Write (or resume) the chosen blocks' pooled outputs for a split as a store."""
    started = time.perf_counter()
    model, blocks, weights = load_backbone(cfg)
    chosen = tuple(sorted(set(cfg.blocks))) or tuple(range(1, len(blocks) + 1))
    for b in chosen:
        if not 1 <= b <= len(blocks):
            raise ValueError(f"block {b} is outside 1..{len(blocks)} for {cfg.model}")
    source, rows, dataset = select_data(cfg.selection, cfg.seed)
    device = pick_device(cfg.device)
    model.to(device)
    images = FeatureInput(source, IMAGE_SIZE, 3)
    probe_maps = capture(model, blocks, torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device), chosen)
    shapes = {
        FeatureKey(0, b, p): pooled_shape(*probe_maps[b].shape[1:], p) for b in chosen for p in cfg.pools
    }
    key = {
        "model": {"name": cfg.model, "image_size": IMAGE_SIZE, "normalisation": "imagenet mean/std"},
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
    made = provenance(
        "backbone",
        cfg.model,
        cfg,
        dataset_record(source, rows, dataset),
        weights=weights,
        torch_version=torch.__version__,
    )
    plan = StorePlan(
        out=cfg.store.out,
        key=json_roundtrip(key),
        compatible=BACKBONE_COMPATIBLE,
        provenance=made,
        row_shapes=shapes,
        ids=[source.ids[i] for i in rows],
        labels=source.labels[rows],
        index=rows,
        shard_rows=cfg.store.shard_rows,
        overwrite=cfg.store.overwrite,
    )

    def maps_of(x: torch.Tensor) -> dict[int, torch.Tensor]:  # [-1, 1] -> ImageNet's normalisation
        return capture(model, blocks, ((x + 1) / 2 - MEAN.to(device)) / STD.to(device), chosen)

    fill = network_fill(
        images, rows, shapes, maps_of, cfg.batch_size, device, cfg.store.progress, cfg.model, cfg.micro_batch
    )
    written = write_store(plan, fill, started=started)
    pools = [pool_label(p) for p in cfg.pools]
    return (
        f"{written.store}: {len(rows)} images, {cfg.model} blocks {list(chosen)}, pools {pools} "
        f"({written.images} computed now)"
    )
