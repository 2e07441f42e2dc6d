"""Alignment metrics (mutual kNN, CKNNA, unbiased CKA) against plain references written here,
and `analysis align` over two stores paired by pixel digest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.align import align_map
from analysis.align_config import AlignConfig
from analysis.alignment import cknna, mutual_knn, neighbours, normalise_rows
from analysis.cli import main
from extract.store.schema import FeatureKey
from tests.probe.stores import make_store


# ---------------------------------------------------------------- plain references (dense n x n)
def ref_hsic_unbiased(k, l):
    """Song et al. (2012), eq. 5, with zeroed diagonals, term by term."""
    n = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    first = sum(k[i, j] * l[j, i] for i in range(n) for j in range(n))
    middle = k.sum() * l.sum() / ((n - 1) * (n - 2))
    last = 2 * (k @ l).sum() / (n - 2)
    return (first + middle - last) / (n * (n - 3))


def ref_masks(kernel, k):
    """mask[i, j] = 1 where j is one of i's k most similar images (i excluded)."""
    n = len(kernel)
    mask = np.zeros((n, n))
    for i in range(n):
        sims = [(kernel[i, j], j) for j in range(n) if j != i]
        for _, j in sorted(sims, reverse=True)[:k]:
            mask[i, j] = 1
    return mask


def ref_metrics(x, y, k):
    """(mutual kNN, CKNNA, unbiased CKA) of row-normalised x and y, from dense kernels."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    kx, ky = x @ x.T, y @ y.T
    mx, my = ref_masks(kx, k), ref_masks(ky, k)
    mutual = float(np.mean((mx * my).sum(axis=1) / k))
    both = mx * my
    knna = ref_hsic_unbiased(both * kx, both * ky) / np.sqrt(
        ref_hsic_unbiased(mx * kx, mx * kx) * ref_hsic_unbiased(my * ky, my * ky)
    )
    cka = ref_hsic_unbiased(kx, ky) / np.sqrt(ref_hsic_unbiased(kx, kx) * ref_hsic_unbiased(ky, ky))
    return mutual, float(knna), float(cka)


RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 24))
Y = X @ RNG.normal(size=(24, 16)) + 1.2 * RNG.normal(size=(40, 16))


@pytest.mark.parametrize("max_bytes", [1 << 30, 30_000])  # all rows at once, and tiles of 16-20 rows
def test_neighbour_metrics_equal_the_dense_definitions(max_bytes):
    na = neighbours(normalise_rows(X), 5, max_bytes=max_bytes)
    nb = neighbours(normalise_rows(Y), 5, max_bytes=max_bytes)
    mutual, knna, _ = ref_metrics(X, Y, 5)
    assert mutual_knn(na, nb) == pytest.approx(mutual, abs=1e-12)
    assert cknna(na, nb) == pytest.approx(knna, abs=1e-6)
    assert 0.1 < mutual < 0.9 and 0.1 < knna < 0.99  # a case that is neither trivial nor degenerate
    # invariants: a representation aligns perfectly with itself and with a rotation of itself
    q, _ = np.linalg.qr(RNG.normal(size=(24, 24)))
    nr = neighbours(normalise_rows(X @ q), 5, max_bytes=max_bytes)
    assert mutual_knn(na, nr) == pytest.approx(1.0) and cknna(na, nr) == pytest.approx(1.0, abs=1e-6)


def test_neighbours_exclude_the_image_itself_and_are_sorted():
    found = neighbours(normalise_rows(X), 4, max_bytes=30_000)
    assert (found.index != np.arange(40)[:, None]).all()
    assert (np.diff(found.value, axis=1) <= 0).all()
    with pytest.raises(ValueError, match="k=40"):
        neighbours(normalise_rows(X), 40, max_bytes=1 << 30)


def test_unrelated_representations_do_not_align():
    rng = np.random.default_rng(9)
    na = neighbours(normalise_rows(rng.normal(size=(200, 30))), 10, max_bytes=1 << 30)
    nz = neighbours(normalise_rows(rng.normal(size=(200, 30))), 10, max_bytes=1 << 30)
    assert mutual_knn(na, nz) < 0.15 and abs(cknna(na, nz)) < 0.2


# ---------------------------------------------------------------- over stores
def _digest_rows(n, seed):
    return np.random.default_rng(seed).integers(1, 255, size=(n, 16), dtype=np.uint8)


def _align_stores(tmp_path, shuffle=True):
    """A: two t x two b keys of 48 images; B: one key of the same images in another order, minus
    a few, plus images A lacks; rows paired only by their pixel digests."""
    rng = np.random.default_rng(11)
    n = 48
    base = rng.normal(size=(n, 6, 2, 2))
    keys = [FeatureKey(t, b, None) for t in (10, 50) for b in (2, 4)]
    a = {k: (base * (i + 1) + (1 + i) * rng.normal(size=base.shape) + 2.0) for i, k in enumerate(keys)}
    digests = _digest_rows(n, 1)
    order = rng.permutation(n) if shuffle else np.arange(n)
    kept = order[:40]  # B holds 40 of A's images, shuffled, and 8 of its own
    other = rng.normal(size=(8, 6, 2, 2))
    b_rows = np.concatenate([base[kept] @ np.eye(2)[::-1] + 0.3 * rng.normal(size=(40, 6, 2, 2)), other])
    b_digests = np.concatenate([digests[kept], _digest_rows(8, 2)])
    y = np.arange(n) % 4
    make_store(
        tmp_path / "a.zarr",
        {k: v.astype(np.float16) for k, v in a.items()},
        y,
        shard_rows=16,
        content=digests,
    )
    kb = FeatureKey(0, 5, None)
    make_store(
        tmp_path / "b.zarr",
        {kb: b_rows.astype(np.float16)},
        y,
        shard_rows=16,
        content=b_digests,
        model="other",
        ids=[f"other/{i}" for i in range(n)],
    )
    return a, keys, b_rows, kept


def test_align_pairs_rows_by_digest_and_equals_the_definitions(tmp_path):
    a, keys, b_rows, kept = _align_stores(tmp_path)
    m = align_map(AlignConfig(tmp_path / "a.zarr", tmp_path / "b.zarr", k=5, progress=False))
    assert m.n == 40 and m.paired_by == "pixel digest" and m.against == "t0/b5/full"
    assert m.rows == [k.label for k in keys]
    # A's rows in A's order (the pairs), B's matching rows
    pos_b = {int(p): i for i, p in enumerate(kept)}
    order_a = sorted(pos_b)
    y = b_rows[[pos_b[p] for p in order_a]].astype(np.float16).astype(np.float64).reshape(40, -1)
    for r, key in enumerate(keys):
        x = a[key].astype(np.float16).astype(np.float64)[order_a].reshape(40, -1)
        mutual, knna, cka = ref_metrics(x, y, 5)
        assert m.values["mutual-knn"][r] == pytest.approx(mutual, abs=1e-12)
        assert m.values["cknna"][r] == pytest.approx(knna, abs=1e-5)
        assert m.values["unbiased-cka"][r] == pytest.approx(cka, abs=1e-5)
    best = m.best()["unbiased-cka"]
    assert best["value"] == max(m.values["unbiased-cka"]) and best["key"] in m.rows


def test_stores_of_different_images_are_refused_naming_a_pair(tmp_path, capsys):
    y = np.arange(16) % 2
    key = FeatureKey(0, 1, None)
    x = np.random.default_rng(0).normal(size=(16, 4, 1, 1)).astype(np.float16)
    make_store(tmp_path / "a.zarr", {key: x}, y, content=_digest_rows(16, 1))
    make_store(
        tmp_path / "b.zarr", {key: x}, y, content=_digest_rows(16, 2), ids=[f"b/{i}" for i in range(16)]
    )
    code = _run(tmp_path, "--store", str(tmp_path / "a.zarr"), "--store", str(tmp_path / "b.zarr"))
    err = capsys.readouterr().err
    assert code != 0 and "share no image" in err and "'train/0'" in err and "'b/0'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _run(tmp_path, *args):
    try:
        main(["align", *args, "--out", str(tmp_path / "align.png"), "--no-progress"])
    except SystemExit as e:
        return e.code
    return 0


def test_the_command_writes_the_map_and_states_the_best_pair(tmp_path, capsys):
    _align_stores(tmp_path)
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    assert _run(tmp_path, "--store", a, "--store", b, "--k", "5", "-b", "4") == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "align.json").read_text())
    assert record["rows"] == ["t10/b4/full", "t50/b4/full"] and record["images"] == 40
    assert set(record["metrics"]) == {"mutual-knn", "cknna", "unbiased-cka"}
    assert f"unbiased-cka: best {record['best']['unbiased-cka']['key']}" in out
    assert (tmp_path / "align.png").stat().st_size > 0
    # a key B does not hold is one line naming what it holds
    assert _run(tmp_path, "--store", a, "--store", b, "--against", "t0/b9/full") != 0
    assert "it holds: t0/b5/full" in capsys.readouterr().err
