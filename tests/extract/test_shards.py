"""The shard loop's parts on their own: the family-neutral feature computation against a plain
per-image reference, the Forward protocol every family's forward satisfies, and the process
group every command runs in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.models.noise import draw_noise
from extract.models.pooling import pool
from extract.shards import Batch, Forward, ShardJob, compute_features
from extract.store import dist
from extract.store.dist import World
from extract.store.schema import FeatureKey
from tests.conftest import tiny_config


class Toy:
    """A Forward with no network: x_t = x0 + (t / 1000) eps, block b's map is b * x_t + t."""

    def noised(self, x0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        return x0 + (t / 1000) * eps

    def capture(self, x_t: torch.Tensor, steps: torch.Tensor, blocks) -> dict[int, torch.Tensor]:
        return {b: b * x_t + steps.float().view(-1, 1, 1, 1) for b in blocks}


def test_compute_features_equals_a_plain_per_image_computation(tmp_path):
    cfg = tiny_config(tmp_path / "s.zarr", micro_batch=2, seed=3, store_dtype="float32", pools=(2, None))
    blocks = (3, 7)
    shapes = {
        FeatureKey(t, b, p): (3, 4, 4) if p is None else (3, p, p)
        for t in cfg.ts
        for b in blocks
        for p in (2, None)
    }
    job = ShardJob(Toy(), None, np.arange(5), cfg, blocks, shapes, torch.device("cpu"), World())
    x0 = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    indices = [11, 4, 7, 0, 30]  # five rows: two full micro-batches and one zero-padded
    got = compute_features(Batch(job, x0, indices))
    assert set(got) == set(shapes)
    for key, rows in got.items():
        assert rows.shape == (5, *shapes[key]) and rows.dtype == np.float32
        for i, index in enumerate(indices):
            eps = draw_noise((3, 4, 4), 3, [index], key.t, 0)[0]
            x_t = x0[i] + (key.t / 1000) * eps
            want = pool((key.b * x_t + key.t)[None], key.pool)[0].numpy()
            np.testing.assert_allclose(rows[i], want, rtol=1e-6, atol=1e-6)


def test_every_familys_forward_is_a_forward():
    from extract.models.adm_forward import AdmForward
    from extract.models.diffusers_any import DiffusersModel
    from extract.models.latent_run import Encoder, LatentForward

    assert issubclass(Toy, Forward) and not issubclass(object, Forward)
    assert all(issubclass(f, Forward) for f in (AdmForward, LatentForward, DiffusersModel))
    # the latent families also encode images into what they noise (the latent cache's compute)
    assert issubclass(LatentForward, Encoder) and issubclass(DiffusersModel, Encoder)
    assert not issubclass(AdmForward, Encoder)


def test_a_process_alone_gets_the_device_it_asked_for(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with dist.process_group("cpu") as (world, device):
        assert world == World() and world.is_main and device == torch.device("cpu")
        assert world.broadcast("x") == "x" and world.all_sum(2.5) == 2.5


def test_the_group_is_left_also_after_an_error(monkeypatch):
    closed = []
    monkeypatch.setattr(dist, "init_world", lambda device: World(1, 2, 0))
    monkeypatch.setattr(dist, "close_world", closed.append)
    with pytest.raises(RuntimeError, match="boom"):
        with dist.process_group("cpu") as (world, device):
            assert world.rank == 1 and not world.is_main
            raise RuntimeError("boom")
    assert closed == [World(1, 2, 0)]
