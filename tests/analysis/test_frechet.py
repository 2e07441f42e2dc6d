"""Fréchet distance and precision/recall against closed forms and plain references."""

import numpy as np
import pytest
from scipy import linalg

from analysis.frechet import GaussianStats, frechet_distance, frechet_from_stats, precision_recall


def test_a_set_against_itself_is_zero_and_a_shifted_copy_is_the_squared_shift():
    x = np.random.default_rng(0).normal(size=(500, 6)) @ np.random.default_rng(1).normal(size=(6, 6))
    a = GaussianStats().add(x)
    assert abs(frechet_from_stats(a, GaussianStats().add(x))) < 1e-8
    shift = np.arange(6.0)
    shifted = GaussianStats().add(x + shift)
    assert frechet_from_stats(a, shifted) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_diagonal_gaussians_give_the_closed_form():
    va, vb, mu = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25]), np.array([1.0, -2.0, 0.5])
    expected = mu @ mu + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert frechet_distance(np.zeros(3), np.diag(va), mu, np.diag(vb)) == pytest.approx(expected, rel=1e-12)


def test_agrees_with_the_public_fid_formula_using_scipy_sqrtm():
    rng = np.random.default_rng(2)
    xa, xb = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 0.3
    ma, ca, mb, cb = xa.mean(0), np.cov(xa, rowvar=False), xb.mean(0), np.cov(xb, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb).real
    reference = np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean)
    assert frechet_distance(ma, ca, mb, cb) == pytest.approx(reference, rel=1e-8)


def test_streamed_statistics_equal_the_batch_ones():
    x = np.random.default_rng(3).normal(size=(1000, 5)).astype(np.float32)
    stats = GaussianStats()
    for s in range(0, 1000, 137):
        stats.add(x[s : s + 137])
    np.testing.assert_allclose(stats.mean, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="features of 3 dimensions added to statistics of 5"):
        stats.add(np.zeros((2, 3)))


def test_precision_and_recall_equal_a_brute_force_count():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(60, 3)), rng.normal(size=(50, 3)) + 0.7

    def radii(x, k=3):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    def share_inside(points, centres, r):
        d = np.sqrt(((points[:, None] - centres[None]) ** 2).sum(-1))
        return (d <= r[None]).any(1).mean()

    p, r = precision_recall(real, fake, k=3, block=7)
    assert p == pytest.approx(share_inside(fake, real, radii(real)))
    assert r == pytest.approx(share_inside(real, fake, radii(fake)))
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_fd_between_two_stores_equals_the_in_memory_computation(tmp_path, capsys):
    import json

    from analysis.cli import main
    from analysis.frechet import GaussianStats
    from extract.store.schema import FeatureKey
    from tests.probe.stores import make_store

    key = FeatureKey(0, 4, 1)
    rng = np.random.default_rng(5)
    xa = rng.normal(size=(300, 8, 1, 1)).astype(np.float16)
    xb = (rng.normal(size=(200, 8, 1, 1)) * 1.5 + 0.5).astype(np.float16)
    make_store(tmp_path / "a.zarr", {key: xa}, np.arange(300) % 3)
    make_store(tmp_path / "b.zarr", {key: xb}, np.arange(200) % 3)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "fd",
                "--real",
                str(tmp_path / "a.zarr"),
                "--fake",
                str(tmp_path / "b.zarr"),
                "--out",
                str(tmp_path / "fd.json"),
            ]
        )
    assert done.value.code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "fd.json").read_text())
    expected = frechet_from_stats(
        GaussianStats().add(xa.reshape(300, -1)), GaussianStats().add(xb.reshape(200, -1))
    )
    assert saved["key"] == "t0/b4/p1" and saved["fd"] == pytest.approx(expected, rel=1e-9)
    assert (saved["precision"], saved["recall"]) == pytest.approx(
        precision_recall(xa.reshape(300, -1), xb.reshape(200, -1))
    )
    with pytest.raises(SystemExit) as done:
        main(
            [
                "fd",
                "--real",
                str(tmp_path / "a.zarr"),
                "--fake",
                str(tmp_path / "b.zarr"),
                "--key",
                "t1/b1/p1",
            ]
        )
    assert done.value.code == 2 and "has no features for t1/b1/p1" in capsys.readouterr().err
