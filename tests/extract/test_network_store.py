"""The shared shard loop of the families that run an image network once per image (backbones,
staged networks): fixed forward groups, so stores do not depend on how many images are loaded at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.models.backbones import BackboneConfig, extract_backbone
from extract.models.network_store import fixed_batches
from extract.models.staged import StagedConfig, extract_staged
from extract.store.config import from_flat
from extract.store.schema import FeatureStore
from tests.extract.test_run import store_bytes


def test_fixed_batches_feed_exactly_the_micro_batch_and_drop_the_padding():
    seen = []

    def maps_of(x):
        seen.append(len(x))
        return {1: x * 2, 3: x.sum(dim=(1, 2, 3), keepdim=True)}

    x = torch.arange(7 * 2 * 2 * 2, dtype=torch.float32).reshape(7, 2, 2, 2)
    out = fixed_batches(maps_of, x, 3)
    assert seen == [3, 3, 3]
    torch.testing.assert_close(out[1], x * 2, rtol=0, atol=0)
    torch.testing.assert_close(out[3], x.sum(dim=(1, 2, 3), keepdim=True), rtol=0, atol=0)


@pytest.mark.slow  # an end-to-end extraction (several runs)
def test_staged_and_backbone_stores_are_bit_identical_whatever_the_batch_size(tmp_path, fmnist_env):
    for batch in (3, 8):
        extract_staged(
            from_flat(
                StagedConfig,
                out=tmp_path / f"c{batch}.zarr",
                network="fmnist-classifier",
                split="test",
                pools=(1, None),
                limit=10,
                batch_size=batch,
                micro_batch=4,
                shard_rows=6,
                progress=False,
            )
        )
        extract_backbone(
            from_flat(
                BackboneConfig,
                out=tmp_path / f"r{batch}.zarr",
                random_init=True,
                model="torchvision:resnet50",
                blocks=(1,),
                pools=(2,),
                limit=5,
                batch_size=batch,
                micro_batch=4,
                device="cpu",
                progress=False,
            )
        )
    for kind in ("c", "r"):
        a, b = store_bytes(tmp_path / f"{kind}3.zarr"), store_bytes(tmp_path / f"{kind}8.zarr")
        assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), kind
    assert np.frombuffer(store_bytes(tmp_path / "c3.zarr")["valid"], np.uint8).all()
    # the forward's group size is part of what made the values
    assert FeatureStore.open(tmp_path / "c3.zarr").attrs["key"]["micro_batch"] == 4
