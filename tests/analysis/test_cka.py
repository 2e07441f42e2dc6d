"""Linear CKA against the Gram-matrix definition, its invariants, and CKA maps of stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.cka import CrossMoments, linear_cka_from_moments, linear_cka_gram
from analysis.cli import main
from analysis.compare import cka_map
from extract.schema import FeatureKey, StoreError
from tests.probe.stores import make_store

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 12))
Y = X @ RNG.normal(size=(12, 7)) + 0.5 * RNG.normal(size=(200, 7))


def streamed(x, y, chunks=(0, 37, 90, 200)):
    m = CrossMoments([x.shape[1], y.shape[1]])
    for a, b in zip(chunks, chunks[1:]):
        m.add([x[a:b], y[a:b]])
    return linear_cka_from_moments(m, 0, 1)


def test_streamed_moments_equal_the_gram_matrix_formula():
    assert streamed(X, Y) == pytest.approx(linear_cka_gram(X, Y), rel=1e-10)
    assert 0.3 < linear_cka_gram(X, Y) < 1.0


def test_invariants():
    assert streamed(X, X) == pytest.approx(1.0) and linear_cka_gram(X, X) == pytest.approx(1.0)
    assert streamed(X, Y) == pytest.approx(streamed(Y, X))
    q, _ = np.linalg.qr(RNG.normal(size=(12, 12)))
    assert streamed(X @ q, Y) == pytest.approx(streamed(X, Y), rel=1e-9)  # orthogonal transform
    assert streamed(3.7 * X, Y) == pytest.approx(streamed(X, Y), rel=1e-9)  # isotropic scaling
    assert streamed(X + 5.0, Y) == pytest.approx(streamed(X, Y), rel=1e-9)  # translation (centring)
    a = np.diag(np.geomspace(0.01, 100, 12)) @ RNG.normal(size=(12, 12))  # invertible, not orthogonal
    assert abs(streamed(X @ a, Y) - streamed(X, Y)) > 1e-3


def _stores(tmp_path):
    keys = [FeatureKey(10, b, 2) for b in (3, 7)]
    y = np.arange(64) % 4
    base = RNG.normal(size=(64, 4, 2, 2))
    a = {keys[0]: base, keys[1]: base * 2 + 0.1 * RNG.normal(size=base.shape)}
    b = {keys[0]: RNG.normal(size=base.shape), keys[1]: base[:, ::-1]}
    make_store(tmp_path / "a.zarr", {k: v.astype(np.float16) for k, v in a.items()}, y, shard_rows=16)
    make_store(tmp_path / "b.zarr", {k: v.astype(np.float16) for k, v in b.items()}, y, shard_rows=16, model="other")
    return a, b


def test_a_map_of_two_stores_equals_the_definition_key_by_key(tmp_path):
    a, b = _stores(tmp_path)
    m = cka_map(tmp_path / "a.zarr", tmp_path / "b.zarr", ("a", "b"), block_rows=10, progress=False)
    assert m.matrix.shape == (2, 2) and m.n == 64 and m.rows[0] == "a t10/b3/p2"
    for i, ka in enumerate(sorted(a, key=FeatureKey.sort_key)):
        for j, kb in enumerate(sorted(b, key=FeatureKey.sort_key)):
            ref = linear_cka_gram(a[ka].astype(np.float16).reshape(64, -1), b[kb].astype(np.float16).reshape(64, -1))
            assert m.matrix[i, j] == pytest.approx(ref, rel=1e-6)
    self_map = cka_map(tmp_path / "a.zarr", progress=False)
    np.testing.assert_allclose(np.diag(self_map.matrix), 1.0)


def test_different_image_sets_and_missing_keys_are_refused(tmp_path, capsys):
    _stores(tmp_path)
    make_store(tmp_path / "c.zarr", {FeatureKey(10, 3, 2): RNG.normal(size=(32, 4, 2, 2)).astype(np.float16)}, np.arange(32) % 4)
    with pytest.raises(StoreError, match="hold different image sets"):
        cka_map(tmp_path / "a.zarr", tmp_path / "c.zarr", progress=False)
    with pytest.raises(StoreError, match=r"no cached features match t=\[50\]"):
        cka_map(tmp_path / "a.zarr", ts=(50,), progress=False)
    with pytest.raises(SystemExit) as done:
        main(["cka", "--store", str(tmp_path / "a.zarr"), "--store", str(tmp_path / "c.zarr"), "--out", str(tmp_path / "x.png")])
    assert done.value.code == 2 and "different image sets" in capsys.readouterr().err


def test_cli_writes_figure_and_matrix(tmp_path, capsys):
    _stores(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["cka", "--store", str(tmp_path / "a.zarr"), "--store", str(tmp_path / "b.zarr"), "--b", "7",
              "--out", str(tmp_path / "m.png"), "--no-progress"])  # fmt: skip
    assert done.value.code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["rows"] == ["A t10/b7/p2"] and saved["images"] == 64 and (tmp_path / "m.svg").exists()


def test_rbf_cka_invariants():
    from analysis.cka import rbf_cka

    assert rbf_cka(X, X) == pytest.approx(1.0)
    assert rbf_cka(X, Y) == pytest.approx(rbf_cka(Y, X))
    q, _ = np.linalg.qr(RNG.normal(size=(12, 12)))
    assert rbf_cka(X @ q + 3.0, Y) == pytest.approx(rbf_cka(X, Y), rel=1e-9)  # distances only
    assert rbf_cka(5.0 * X, Y) == pytest.approx(rbf_cka(X, Y), rel=1e-9)  # bandwidth follows the median
    assert rbf_cka(X, RNG.normal(size=(200, 7))) < rbf_cka(X, Y)


def test_unbiased_hsic_equals_the_u_statistic_by_brute_force():
    from itertools import permutations

    from analysis.cka import hsic_unbiased, linear_gram, rbf_gram

    x, y = X[:7], Y[:7]
    k, l = linear_gram(x), rbf_gram(y)
    tuples = list(permutations(range(7), 4))
    brute = np.mean([k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q] for i, j, q, r in tuples])
    assert hsic_unbiased(k, l) == pytest.approx(brute, rel=1e-9)


def test_minibatch_cka_stays_finite_where_a_batch_hsic_is_negative():
    from analysis.cka import hsic_unbiased, linear_gram, minibatch_cka

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))  # independent: HSIC about 0
    batches = [(linear_gram(a[i : i + 8]), linear_gram(b[i : i + 8])) for i in range(0, 400, 8)]
    assert min(hsic_unbiased(k, l) for k, l in batches) < 0  # a single batch's CKA would be meaningless
    value = minibatch_cka(batches)
    assert np.isfinite(value) and abs(value) < 0.2
    same = [(k, k) for k, _ in batches]
    assert minibatch_cka(same) == pytest.approx(1.0)


def test_bench_agrees_with_the_gram_version_and_skips_what_does_not_fit():
    from analysis.bench import bench_cka, format_table

    rows = bench_cka(sizes=(300, 900), dim=16, block=128, gram_limit_gb=0.02)
    assert abs(rows[0]["gram_minus_streamed"]) < 1e-9 and rows[1]["gram_seconds"] is None
    assert "needs about" in format_table(rows)


def test_rbf_and_minibatch_maps_equal_their_definitions(tmp_path):
    from analysis.cka import hsic_unbiased, linear_gram, minibatch_cka, rbf_cka

    a, b = _stores(tmp_path)
    ka, kb = sorted(a, key=FeatureKey.sort_key), sorted(b, key=FeatureKey.sort_key)
    xa = [a[k].astype(np.float16).astype(np.float64).reshape(64, -1) for k in ka]
    xb = [b[k].astype(np.float16).astype(np.float64).reshape(64, -1) for k in kb]
    rbf = cka_map(tmp_path / "a.zarr", tmp_path / "b.zarr", kernel="rbf", progress=False)
    assert rbf.matrix[1, 0] == pytest.approx(rbf_cka(xa[1], xb[0]), rel=1e-9) and rbf.kernel == "rbf"
    mb = cka_map(tmp_path / "a.zarr", tmp_path / "b.zarr", kernel="minibatch", batch=16, progress=False)
    rng = np.random.default_rng([0, 13])
    rng.permutation(1)  # the one block's visiting order
    order = rng.permutation(64)  # rows within the one window: the whole store
    ref = minibatch_cka((linear_gram(xa[0][order[i : i + 16]]), linear_gram(xb[1][order[i : i + 16]])) for i in range(0, 64, 16))
    assert mb.matrix[0, 1] == pytest.approx(ref, rel=1e-9)
    shuffled = minibatch_cka((linear_gram(xa[0][order[i : i + 16]]), linear_gram(xb[0][order[i : i + 16]])) for i in range(0, 64, 16))
    consecutive = minibatch_cka((linear_gram(xa[0][i : i + 16]), linear_gram(xb[0][i : i + 16])) for i in range(0, 64, 16))
    assert mb.matrix[0, 0] == pytest.approx(shuffled, rel=1e-9) and mb.matrix[0, 0] != pytest.approx(consecutive, rel=1e-6)
    assert hsic_unbiased(linear_gram(xa[0][:16]), linear_gram(xa[0][:16])) > 0
    with pytest.raises(ValueError, match="more than --max-rows 10"):
        cka_map(tmp_path / "a.zarr", kernel="rbf", max_rows=10, progress=False)
