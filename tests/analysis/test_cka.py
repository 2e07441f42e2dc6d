"""Linear CKA against the Gram-matrix definition, its invariants, and CKA maps of stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.cka import CrossMoments, linear_cka_from_moments, linear_cka_gram
from analysis.cli import main
from analysis.cka_config import CkaConfig
from analysis.compare import cka_map
from extract.store.schema import FeatureKey, StoreError
from tests.probe.stores import make_store

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 12))
Y = X @ RNG.normal(size=(12, 7)) + 0.5 * RNG.normal(size=(200, 7))


def _map(a, b=None, **options):
    """The CKA map of store a (against store b), without a progress bar."""
    return cka_map(CkaConfig(a, b, progress=False, **options))


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
    make_store(
        tmp_path / "b.zarr", {k: v.astype(np.float16) for k, v in b.items()}, y, shard_rows=16, model="other"
    )
    return a, b


def test_a_map_of_two_stores_equals_the_definition_key_by_key(tmp_path):
    a, b = _stores(tmp_path)
    m = _map(tmp_path / "a.zarr", tmp_path / "b.zarr", labels=("a", "b"), block_rows=10)
    assert m.matrix.shape == (2, 2) and m.n == 64 and m.rows[0] == "a t10/b3/p2"
    for i, ka in enumerate(sorted(a, key=FeatureKey.sort_key)):
        for j, kb in enumerate(sorted(b, key=FeatureKey.sort_key)):
            ref = linear_cka_gram(
                a[ka].astype(np.float16).reshape(64, -1), b[kb].astype(np.float16).reshape(64, -1)
            )
            assert m.matrix[i, j] == pytest.approx(ref, rel=1e-6)
    self_map = _map(tmp_path / "a.zarr")
    np.testing.assert_allclose(np.diag(self_map.matrix), 1.0)


def test_different_image_sets_and_missing_keys_are_refused(tmp_path, capsys):
    _stores(tmp_path)
    make_store(
        tmp_path / "c.zarr",
        {FeatureKey(10, 3, 2): RNG.normal(size=(32, 4, 2, 2)).astype(np.float16)},
        np.arange(32) % 4,
    )
    with pytest.raises(StoreError, match="hold different image sets"):
        _map(tmp_path / "a.zarr", tmp_path / "c.zarr")
    with pytest.raises(StoreError, match=r"no cached features match t=\[50\]"):
        _map(tmp_path / "a.zarr", ts=(50,))
    with pytest.raises(SystemExit) as done:
        main(
            [
                "cka",
                "--store",
                str(tmp_path / "a.zarr"),
                "--store",
                str(tmp_path / "c.zarr"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
    assert done.value.code == 2 and "different image sets" in capsys.readouterr().err


def test_cli_writes_figure_and_matrix(tmp_path, capsys):
    _stores(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "cka",
                "--store",
                str(tmp_path / "a.zarr"),
                "--store",
                str(tmp_path / "b.zarr"),
                "--b",
                "7",
                "--out",
                str(tmp_path / "m.png"),
                "--no-progress",
            ]
        )
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
    rbf = _map(tmp_path / "a.zarr", tmp_path / "b.zarr", kernel="rbf")
    assert rbf.matrix[1, 0] == pytest.approx(rbf_cka(xa[1], xb[0]), rel=1e-9) and rbf.kernel == "rbf"
    mb = _map(tmp_path / "a.zarr", tmp_path / "b.zarr", kernel="minibatch", batch=16)
    rng = np.random.default_rng([0, 13])
    rng.permutation(1)  # the one block's visiting order
    order = rng.permutation(64)  # rows within the one window: the whole store
    ref = minibatch_cka(
        (linear_gram(xa[0][order[i : i + 16]]), linear_gram(xb[1][order[i : i + 16]]))
        for i in range(0, 64, 16)
    )
    assert mb.matrix[0, 1] == pytest.approx(ref, rel=1e-9)
    shuffled = minibatch_cka(
        (linear_gram(xa[0][order[i : i + 16]]), linear_gram(xb[0][order[i : i + 16]]))
        for i in range(0, 64, 16)
    )
    consecutive = minibatch_cka(
        (linear_gram(xa[0][i : i + 16]), linear_gram(xb[0][i : i + 16])) for i in range(0, 64, 16)
    )
    assert mb.matrix[0, 0] == pytest.approx(shuffled, rel=1e-9)
    assert mb.matrix[0, 0] != pytest.approx(consecutive, rel=1e-6)
    assert hsic_unbiased(linear_gram(xa[0][:16]), linear_gram(xa[0][:16])) > 0
    with pytest.raises(ValueError, match="more than --max-rows 10"):
        _map(tmp_path / "a.zarr", kernel="rbf", max_rows=10)


# ---------------------------------------------------------------- linear CKA's paths by size
def _wide_stores(tmp_path, n=48, views=1):
    """Four keys of 8x4x4 = 128 features each (wider than n), some rows invalid, in two stores."""
    rng = np.random.default_rng(7)
    keys = [FeatureKey(t, b, None) for t in (10, 50) for b in (3, 5)]
    base = rng.normal(size=(n, views, 8, 4, 4) if views > 1 else (n, 8, 4, 4))
    a = {
        k: (base * (i + 1) + (i + 0.5) * rng.normal(size=base.shape) + 3.0).astype(np.float16)
        for i, k in enumerate(keys)
    }
    b = {
        k: (np.roll(base, i, axis=-1) + rng.normal(size=base.shape)).astype(np.float16)
        for i, k in enumerate(keys)
    }
    valid = np.ones(n, bool)
    valid[[3, 17, 40]] = False
    y = np.arange(n) % 4
    make_store(tmp_path / "wa.zarr", a, y, shard_rows=16, views=views, valid=valid)
    make_store(tmp_path / "wb.zarr", b, y, shard_rows=16, views=views, valid=valid, model="other")
    return a, b, valid


@pytest.mark.parametrize("views", [1, 3])
def test_the_four_linear_paths_agree_with_the_moments_and_the_definition(tmp_path, views):
    a, b, valid = _wide_stores(tmp_path, views=views)
    maps = {
        p: _map(tmp_path / "wa.zarr", tmp_path / "wb.zarr", linear_path=p, block_rows=10)
        for p in ("moments", "gram", "pairwise", "tiles")
    }
    assert {p: m.method for p, m in maps.items()} == {
        "moments": "moments",
        "gram": "gram",
        "pairwise": "pairwise",
        "tiles": "tiles",
    }
    np.testing.assert_allclose(maps["gram"].matrix, maps["moments"].matrix, rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps["pairwise"].matrix, maps["moments"].matrix, rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps["tiles"].matrix, maps["moments"].matrix, rtol=0, atol=1e-6)
    ka, kb = sorted(a, key=FeatureKey.sort_key), sorted(b, key=FeatureKey.sort_key)
    first = (lambda x: x[:, 0]) if views > 1 else (lambda x: x)
    ref = linear_cka_gram(
        first(a[ka[1]])[valid].reshape(valid.sum(), -1), first(b[kb[2]])[valid].reshape(valid.sum(), -1)
    )
    assert maps["gram"].matrix[1, 2] == pytest.approx(ref, abs=1e-9)
    assert 0.05 < maps["gram"].matrix.min() and maps["gram"].matrix.max() < 0.999  # not a degenerate map
    self_maps = [
        _map(tmp_path / "wa.zarr", linear_path=p).matrix for p in ("moments", "gram", "pairwise", "tiles")
    ]
    for other in self_maps[1:]:
        np.testing.assert_allclose(other, self_maps[0], atol=1e-6)
    np.testing.assert_allclose(np.diag(self_maps[1]), 1.0, atol=1e-9)


def _peak(fn):
    import tracemalloc

    tracemalloc.start()
    value = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, peak


def test_auto_takes_the_first_path_that_fits_and_memory_stays_under_the_cap(tmp_path):
    from analysis.linear_paths import Keys, gram_bytes, moments_bytes

    _wide_stores(tmp_path)  # 8 keys of 128 features over 45 valid images: wide keys, few images
    pair = (tmp_path / "wa.zarr", tmp_path / "wb.zarr")
    ref = _map(*pair, linear_path="moments").matrix
    assert _map(*pair).method == "moments"  # D = 1024: 8 MiB of moments fit in 2 GiB
    cap = moments_bytes([128] * 8, 48) - 1  # all moments no longer fit; eight 45 x 45 Grams do
    m, peak = _peak(lambda: _map(*pair, max_bytes=cap))
    assert m.method == "gram" and peak < cap + (1 << 20)
    np.testing.assert_allclose(m.matrix, ref, atol=1e-6)
    # two Grams fit, eight do not, and neither do a pair's moments (D = 256): Grams one pair at a time
    probe = _map(*pair)  # only for the sizes below
    assert probe.n == 45
    valid = np.ones(45, bool)
    sizes = Keys([np.zeros((45, 128), np.float16)] * 8, [False] * 8, [128] * 8, valid)
    cap = gram_bytes(sizes, 2)
    assert gram_bytes(sizes, 8) > cap and moments_bytes([128, 128], 48) > cap
    m, peak = _peak(lambda: _map(*pair, max_bytes=cap))
    assert m.method == "pairwise" and peak < cap + (1 << 20)
    np.testing.assert_allclose(m.matrix, ref, atol=1e-6)


def test_many_narrow_keys_over_many_images_go_pair_by_pair_through_moments(tmp_path):
    from analysis.linear_paths import moments_bytes

    rng = np.random.default_rng(9)
    n, keys = 600, [FeatureKey(10, b, 2) for b in (1, 2, 3, 4)]
    base = rng.normal(size=(n, 4, 2, 2))
    feats = {k: (base + i * rng.normal(size=base.shape)).astype(np.float16) for i, k in enumerate(keys)}
    make_store(tmp_path / "n.zarr", feats, np.arange(n) % 4, shard_rows=128)
    ref = _map(tmp_path / "n.zarr", linear_path="gram").matrix
    # a pair's moments; not all four keys' (D = 64), nor two 600 x 600 Grams
    cap = moments_bytes([16, 16], 600)
    m, peak = _peak(lambda: _map(tmp_path / "n.zarr", max_bytes=cap))
    assert m.method == "pairwise" and peak < cap + (1 << 20)
    np.testing.assert_allclose(m.matrix, ref, atol=1e-6)


def test_a_request_that_fits_no_path_is_one_line(tmp_path, capsys):
    _wide_stores(tmp_path)
    with pytest.raises(ValueError, match="needs at least .* even by 16-row tiles"):
        _map(tmp_path / "wa.zarr", max_bytes=1000)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "cka",
                "--store",
                str(tmp_path / "wa.zarr"),
                "--max-memory-gb",
                "0.01",
                "--linear-path",
                "moments",
                "--out",
                str(tmp_path / "m.png"),
                "--no-progress",
            ]
        )
    assert done.value.code == 0  # 4 keys x 128 features fit in 10 MiB by moments
    with pytest.raises(SystemExit) as done:
        main(
            [
                "cka",
                "--store",
                str(tmp_path / "wa.zarr"),
                "--max-memory-gb",
                "0.000001",
                "--out",
                str(tmp_path / "m.png"),
                "--no-progress",
            ]
        )
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-memory-gb" in err[0] and "Traceback" not in err[0]


def test_the_cli_defaults_are_the_library_ones():
    from analysis.cli import cli
    from analysis.linear_paths import DEFAULT_MAX_BYTES

    defaults = {p.name: p.default for p in cli.commands["cka"].params}
    config = CkaConfig(Path("a"))
    assert defaults["max_memory_gb"] * 2**30 == DEFAULT_MAX_BYTES == config.max_bytes
    for name in ("kernel", "linear_path", "device", "max_rows", "batch", "seed", "progress"):
        assert defaults[name] == getattr(config, name), name
    with pytest.raises(ValueError, match="kernel must be one of linear, rbf, minibatch, got 'cosine'"):
        CkaConfig(Path("a"), kernel="cosine")


@pytest.mark.parametrize("resident", [True, False])
def test_tiles_smaller_than_the_image_count_give_the_same_map_within_the_cap(tmp_path, resident):
    """Tiles of 16 of the 45 valid rows (3 tiles, 6 tile pairs), rows held or re-read per tile."""
    from analysis.tiled_cka import plan_tiles, resident_bytes, tile_bytes

    _wide_stores(tmp_path)  # 4 keys x 128 features (fp16) a store, 45 valid images
    dims, sizes = [128] * 8, [2] * 8
    cap = tile_bytes(dims, sizes, 16) + (resident_bytes(45, dims, sizes) if resident else 0)
    tile, held = plan_tiles(45, dims, sizes, cap)
    assert held is False and 16 <= tile < 45  # held rows need tiles of 1024 (or all n) beside them
    cap = (
        tile_bytes(dims, sizes, 45) + resident_bytes(45, dims, sizes)
        if resident
        else tile_bytes(dims, sizes, 20)
    )
    tile, held = plan_tiles(45, dims, sizes, cap)
    assert (tile, held) == ((45, True) if resident else (20, False)) and tile_bytes(dims, sizes, tile) <= cap
    pair = (tmp_path / "wa.zarr", tmp_path / "wb.zarr")
    ref = _map(*pair, linear_path="moments").matrix
    m = _map(*pair, linear_path="tiles", max_bytes=cap, block_rows=7)
    np.testing.assert_allclose(m.matrix, ref, rtol=0, atol=1e-6)


def test_auto_falls_back_to_tiles_when_no_other_path_fits(tmp_path):
    from analysis.linear_paths import moments_bytes

    rng = np.random.default_rng(4)
    n, keys = 3000, [FeatureKey(10, 9, None), FeatureKey(10, 30, None)]
    base = rng.normal(size=(n, 16, 8, 8))
    feats = {k: (base * (i + 1) + rng.normal(size=base.shape)).astype(np.float16) for i, k in enumerate(keys)}
    make_store(tmp_path / "f.zarr", feats, np.arange(n) % 10, shard_rows=512)
    # a pair's moments (64 MiB) and two 3000 x 3000 Grams (137 MiB) do not fit; tiles of ~450 rows do
    cap = 20 << 20
    assert moments_bytes([1024, 1024], 512) > cap and 2 * 8 * n * n > cap
    m = _map(tmp_path / "f.zarr", max_bytes=cap)
    assert m.method == "tiles"
    np.testing.assert_allclose(
        m.matrix,
        _map(tmp_path / "f.zarr", linear_path="moments").matrix,
        rtol=0,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="runs the tiles path only"):
        _map(tmp_path / "f.zarr", linear_path="gram", device="meta")


@pytest.mark.gpu
def test_tiles_on_a_gpu_equal_the_cpu(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _wide_stores(tmp_path)
    pair = (tmp_path / "wa.zarr", tmp_path / "wb.zarr")
    gpu = _map(*pair, device="cuda")
    assert gpu.method == "tiles"
    np.testing.assert_allclose(gpu.matrix, _map(*pair, linear_path="moments").matrix, atol=1e-6)


def test_the_full_map_bench_skips_what_does_not_fit_and_its_paths_agree(tmp_path):
    from analysis.bench import bench_full_maps, format_full_maps

    rng = np.random.default_rng(2)
    keys = [FeatureKey(10, 9, None), FeatureKey(10, 30, None)]
    base = rng.normal(size=(40, 4, 4, 4))
    make_store(
        tmp_path / "demo.zarr",
        {k: (base + i * rng.normal(size=base.shape)).astype(np.float16) for i, k in enumerate(keys)},
        np.arange(40) % 4,
        shard_rows=16,
    )
    rows = bench_full_maps(tmp_path / "demo.zarr", imagenet_rows=20, max_gb=0.5)
    real = [r for r in rows if r["case"].startswith("demo.zarr")]
    assert [r["path"] for r in real] == ["moments", "gram", "tiles"] and all(
        abs(r["minus_first"]) < 1e-6 for r in real
    )
    big = {r["path"]: r for r in rows if r["case"].startswith("synthetic")}
    assert "skipped" in big["moments"] and "GiB" in big["moments"]["skipped"]  # 262,144^2 moments never fit
    assert big["gram"]["dims"] == [262144, 262144] and big["gram"]["n"] == 20
    # 20 images of 262,144 values: near 1
    assert abs(big["tiles"]["cka"] - big["gram"]["cka"]) < 1e-6 and 0.1 < big["gram"]["cka"] <= 1
    assert big["tiles"]["peak_rss_mb"] >= 0 and "skipped" in format_full_maps(rows)
