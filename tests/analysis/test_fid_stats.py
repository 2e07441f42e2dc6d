"""A reference statistics file round-trips exactly, and a file that is not one is refused."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.fid_stats import Side, load_stats, save_stats


def test_statistics_round_trip_with_their_key_and_rows(tmp_path):
    rng = np.random.default_rng(0)
    side = Side(rng.normal(size=4), np.eye(4), 9, rng.normal(size=(3, 4)), {"data": "x"}, {"features": "p"})
    save_stats(tmp_path / "s.npz", side)
    key, back = load_stats(tmp_path / "s.npz")
    assert key["images"] == {"data": "x"} and key["features"] == {"features": "p"}
    assert np.array_equal(back.mu, side.mu) and np.array_equal(back.sigma, side.sigma) and back.n == 9
    assert np.allclose(back.sample, side.sample.astype(np.float32))
    np.savez(tmp_path / "bad.npz", other=np.zeros(2))
    with pytest.raises(ValueError, match="no 'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")
