"""`extract run --model timm:NAME`: a timm network's block outputs, pooled, in the feature schema.

Each image goes through timm's eval transform of the model's pretrained config (size, crop,
interpolation, mean and std; all in the store key), then `forward_intermediates` to the deepest
block asked for. Keys are (t=0, b, pool), as for the torchvision backbones: an encoder sees no
noise. `--tokens` says what a block's map is: the patch grid (a CNN's map), the class token or
the mean of patch tokens (both C x 1 x 1); --pool then applies to it as to any map.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from extract.data.selection import dataset_record, select_data
from extract.data.sources import FeatureInput, ImageSource, content_digest, to_mode
from extract.models import timm_build
from extract.models.network_store import network_fill
from extract.models.pooling import pooled_shape
from extract.models.timm_options import TimmConfig, timm_spec
from extract.store.config import json_roundtrip
from extract.store.dist import pick_device
from extract.store.provenance import provenance
from extract.store.schema import FeatureKey, pool_label
from extract.store.writer import StorePlan, write_store

# the key fields that define what a timm store's features mean
TIMM_COMPATIBLE = ("model", "weights", "preprocessing", "tokens", "device_type")


class TimmInput(FeatureInput):
    """Item i -> (index, the model's input (3, H, W) after timm's eval transform, error text,
    pixel digest): as FeatureInput, with the model's own preprocessing."""

    def __init__(self, source: ImageSource, prep: timm_build.Preprocessing):
        super().__init__(source, prep.input_size[1], 3)
        self.transform = prep.transform()

    def _tensor(self, i: int) -> tuple[torch.Tensor, np.ndarray]:
        img = self.source.load(i)
        return self.transform(to_mode(img, 3)), content_digest(img)


def extract_timm(cfg: TimmConfig) -> str:
    """Write (or resume) the chosen blocks' pooled outputs for a split as a store."""
    started = time.perf_counter()
    spec = timm_spec(cfg.model, cfg.options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = timm_build.build(spec)
    weights = timm_build.load_weights(model, spec, cfg.ckpt, cfg.random_init, cfg.seed)
    if cfg.tokens == "cls" and not timm_build.has_class_token(model):
        raise ValueError(f"{cfg.model} has no class token; use --tokens grid or mean")
    chosen = timm_build.resolve_blocks(model, spec, cfg.blocks)
    prep = timm_build.preprocessing(model, spec)
    source, rows, dataset = select_data(cfg.selection, cfg.seed)
    device = pick_device(cfg.device)
    model.to(device)
    probe = timm_build.capture(model, torch.zeros(1, *prep.input_size, device=device), chosen, cfg.tokens)
    shapes = {}
    for b in chosen:
        for p in cfg.pools:
            try:
                shapes[FeatureKey(0, b, p)] = pooled_shape(*probe[b].shape[1:], p)
            except ValueError as e:
                hint = (
                    "; --tokens cls and mean give one C x 1 x 1 map: --pool 1" if cfg.tokens != "grid" else ""
                )
                raise ValueError(f"block {b}: {e}{hint}") from None
    import timm

    key = {
        "model": {"name": cfg.model, "timm": spec.name, "model_args": dict(spec.model_args)},
        "weights": weights,
        "preprocessing": prep.record(),
        "tokens": cfg.tokens,
        "dtype": "fp32",
        "class_label": None,
        "micro_batch": cfg.micro_batch,
        "device_type": device.type,
        "seed": cfg.seed,
        "limit": cfg.selection.limit,
        "dataset": dataset,
        "blocks": list(chosen),
        "modules": {str(b): timm_build.feature_modules(model)[b - 1]["module"] for b in chosen},
        "pools": list(cfg.pools),
    }
    made = provenance(
        "timm",
        cfg.model,
        cfg,
        dataset_record(source, rows, dataset),
        weights=weights,
        torch_version=torch.__version__,
        timm_version=timm.__version__,
    )
    plan = StorePlan(
        out=cfg.store.out,
        key=json_roundtrip(key),
        compatible=TIMM_COMPATIBLE,
        provenance=made,
        row_shapes=shapes,
        ids=[source.ids[i] for i in rows],
        labels=source.labels[rows],
        index=rows,
        shard_rows=cfg.store.shard_rows,
        overwrite=cfg.store.overwrite,
    )

    def maps_of(x: torch.Tensor) -> dict[int, torch.Tensor]:  # x: the model's normalised input
        return timm_build.capture(model, x, chosen, cfg.tokens)

    images = TimmInput(source, prep)
    fill = network_fill(
        images, rows, shapes, maps_of, cfg.batch_size, device, cfg.store.progress, cfg.model, cfg.micro_batch
    )
    written = write_store(plan, fill, started=started)
    control = " (random-weight control)" if cfg.random_init else ""
    return (
        f"{written.store}: {len(rows)} images, {cfg.model}{control}, blocks {list(chosen)}, "
        f"tokens {cfg.tokens}, pools {[pool_label(p) for p in cfg.pools]} ({written.images} computed now)"
    )
