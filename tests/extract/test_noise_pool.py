import numpy as np
import pytest
import torch

from extract.models.adm_presets import PRESETS
from extract.models.noise import diffusion_for, draw_noise, noise_seed, q_sample
from extract.models.pooling import pool
from extract.store.schema import parse_pool


def test_noise_depends_on_every_part_of_its_key():
    seeds = {noise_seed(*k) for k in [(0, 1, 2, 0), (1, 1, 2, 0), (0, 2, 2, 0), (0, 1, 3, 0), (0, 1, 2, 1)]}
    assert len(seeds) == 5


def test_noise_of_an_image_does_not_depend_on_its_batch():
    together = draw_noise((3, 4, 4), seed=7, indices=[5, 9, 11], t=10, view=0)
    alone = torch.cat([draw_noise((3, 4, 4), 7, [i], 10, 0) for i in (5, 9, 11)])
    assert torch.equal(together, alone)
    assert not torch.equal(together[0], together[1])


def test_q_sample_is_the_closed_form():
    preset = PRESETS["tiny"]
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    eps = torch.randn(2, 3, 8, 8)
    t = 250
    # the linear schedule written out: betas from 1e-4 to 0.02 (scaled for 1000 steps)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))[t]
    expected = np.sqrt(abar) * x0.double() + np.sqrt(1 - abar) * eps.double()
    assert torch.allclose(q_sample(preset, x0, t, eps).double(), expected, atol=1e-6)
    assert diffusion_for(preset).num_timesteps == 1000


def test_pool_equals_block_means():
    x = torch.randn(2, 5, 8, 8)
    for p in (1, 2, 4, 8):
        ref = x.reshape(2, 5, p, 8 // p, p, 8 // p).mean(dim=(3, 5))
        assert torch.allclose(pool(x, p), ref, atol=1e-6)
    assert pool(x, None) is x


def test_adaptive_pool_of_uneven_sizes_matches_its_definition():
    x = torch.randn(1, 2, 7, 7)
    p = 3
    ref = torch.empty(1, 2, p, p)
    for i in range(p):
        for j in range(p):
            r0, r1 = (i * 7) // p, -((-(i + 1) * 7) // p)
            c0, c1 = (j * 7) // p, -((-(j + 1) * 7) // p)
            ref[..., i, j] = x[..., r0:r1, c0:c1].mean(dim=(-1, -2))
    assert torch.allclose(pool(x, p), ref, atol=1e-6)


def test_pool_larger_than_the_map_is_an_error():
    with pytest.raises(ValueError, match="larger than the block's 4x4 map"):
        pool(torch.zeros(1, 1, 4, 4), 5)


def test_parse_pool():
    assert parse_pool("2") == 2 and parse_pool("none") is None and parse_pool("full") is None
    for bad in ("0", "x", "-1"):
        with pytest.raises(ValueError):
            parse_pool(bad)
