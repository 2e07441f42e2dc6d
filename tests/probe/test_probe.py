"""The probe run: grid equivalence, streaming, selection, references, outputs, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from extract.store.schema import FeatureKey, FeatureStore, StoreError, open_complete
from probe.grid import Grid, MemberSpec, TrainSettings, build_member, feature_set, train_grid
from probe.reader import FeatureReader, ProbeDataError, carve_validation, fit_standardizers, stream_batches
from probe.results import load_head
from probe.run import ProbeConfig, probe
from probe.tables import read_table
from tests.probe.stores import blobs, make_store

K1, K2 = FeatureKey(10, 7, 2), FeatureKey(50, 7, 2)


def run(tmp_path, train, **kw):
    training = {k: kw.pop(k) for k in ("epochs", "batch_size", "seed") if k in kw}
    base = dict(
        train=train,
        results=tmp_path / "results",
        progress=False,
        training=TrainSettings(**{"epochs": 3, "batch_size": 32, **training}),
    )
    return probe(ProbeConfig(**{**base, **kw}))


@pytest.fixture
def two_keys(tmp_path):
    x1, y, c = blobs(400, 4, 16, seed=0, spread=2.0, shape=(4, 2, 2))
    x2, _, _ = blobs(400, 4, 16, seed=5, spread=4.0, shape=(4, 2, 2))
    x1t, yt, _ = blobs(120, 4, 16, seed=1, spread=2.0, shape=(4, 2, 2), centres=c)
    make_store(tmp_path / "train.zarr", {K1: x1, K2: x2}, y)
    make_store(tmp_path / "test.zarr", {K1: x1t, K2: x1t}, yt, split="test")
    return tmp_path / "train.zarr", tmp_path / "test.zarr"


def _train_alone_and_in_grid(store_path, specs, seed=3):
    store = open_complete(store_path)
    reader = FeatureReader(store, (K1, K2))
    labels = store.labels()
    mask = np.ones(store.n_rows, bool)
    norms = fit_standardizers(reader, mask)
    settings = TrainSettings(epochs=2, batch_size=32, seed=seed)
    sets = list(dict.fromkeys(s.features for s in specs))

    def train(chosen):
        chosen_sets = [fs for fs in sets if any(s.features == fs for s in chosen)]
        grid = Grid(chosen, chosen_sets, [build_member(s, 4, seed) for s in chosen], settings)

        def epochs(e: int):
            return stream_batches(reader, mask, labels, batch=32, window_rows=100, seed=seed, epoch=e)

        train_grid(grid, epochs, 400 // 32, norms, "cpu", progress=False)
        return grid

    return train(specs), {i: train([s]) for i, s in enumerate(specs)}


def test_a_grid_member_trains_exactly_as_it_would_alone(two_keys):
    shapes = {K1: (4, 2, 2), K2: (4, 2, 2)}
    f1, f12 = feature_set((K1,), shapes), feature_set((K1, K2), shapes)
    specs = [
        MemberSpec(h, opts, fs, lr, 0.0)
        for h, opts in (("linear", ()), ("mlp", (("hidden", (16,)),)))
        for fs in (f1, f12)
        for lr in (1e-3, 1e-2)
    ]
    grid, alone = _train_alone_and_in_grid(two_keys[0], specs)
    assert len(grid.specs) == 8 and len(grid.banks) == 2 and len(grid.singles) == 4
    for i, single in alone.items():
        for (name, a), (_, b) in zip(
            grid.member(i).state_dict().items(), single.member(0).state_dict().items()
        ):
            # singles are bit-identical; a bank's one GEMM rounds differently from a 1-head GEMM
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"member {i} {name}")


def test_streaming_in_small_windows_equals_preloading(tmp_path):
    x, y, c = blobs(600, 4, 2048, seed=0, spread=30.0, shape=(512, 2, 2))
    make_store(tmp_path / "big.zarr", {K1: x}, y, shard_rows=64)
    reader = FeatureReader(open_complete(tmp_path / "big.zarr"), (K1,))
    assert reader.block_rows < 600 and reader.row_bytes() * 600 > 2 * (1 << 20)
    results = [
        run(tmp_path, tmp_path / "big.zarr", preload=p, buffer_mb=1, name=f"p{p}", lrs=(1e-3, 1e-2))
        for p in (True, False)
    ]
    assert (
        results[0]["timing"]["train"]["window_rows"] == 128
        and results[1]["timing"]["train"]["preload"] is False
    )
    assert [m["val"] for m in results[0]["members"]] == [m["val"] for m in results[1]["members"]]
    heads = [load_head(tmp_path / "results" / f"p{p}.head.pt")[0].state_dict() for p in (True, False)]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_stream_visits_every_training_row_once_per_epoch_in_a_new_order(two_keys):
    store = open_complete(two_keys[0])
    reader = FeatureReader(store, (K1,))
    mask = np.ones(store.n_rows, bool)
    mask[::7] = False
    ids = np.arange(store.n_rows)  # use labels to carry row numbers through the stream
    orders = []
    for epoch in (0, 1):
        rows = np.concatenate(
            [y for _, y in stream_batches(reader, mask, ids, batch=10, window_rows=50, seed=0, epoch=epoch)]
        )
        assert len(rows) == (mask.sum() // 10) * 10 and len(set(rows)) == len(rows) and mask[rows].all()
        orders.append(rows)
    assert not np.array_equal(orders[0], orders[1])


def test_two_ranks_read_disjoint_windows_and_take_equal_steps(two_keys):
    store = open_complete(two_keys[0])
    reader = FeatureReader(store, (K1,))
    mask = np.ones(store.n_rows, bool)
    ids = np.arange(store.n_rows)
    per_rank = [
        [
            y
            for _, y in stream_batches(
                reader, mask, ids, batch=8, window_rows=60, seed=0, epoch=0, rank=r, world=2
            )
        ]
        for r in (0, 1)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) > 0
    assert not set(np.concatenate(per_rank[0])) & set(np.concatenate(per_rank[1]))


def test_each_epoch_draws_one_cached_view_per_image(tmp_path):
    # view v of every row holds the constant v: the stream shows which view each row got
    n, views = 64, 3
    x = np.broadcast_to(
        np.arange(views, dtype=np.float16)[None, :, None, None, None], (n, views, 2, 1, 1)
    ).copy()
    make_store(tmp_path / "v.zarr", {K1: x}, np.arange(n) % 2, views=views, shard_rows=16)
    reader = FeatureReader(open_complete(tmp_path / "v.zarr"), (K1,))
    mask = np.ones(n, bool)
    drawn = [
        np.concatenate(
            [
                v[K1][:, 0, 0, 0]
                for v, _ in stream_batches(
                    reader, mask, np.arange(n), batch=8, window_rows=32, seed=0, epoch=e
                )
            ]
        )
        for e in (0, 1)
    ]
    assert set(drawn[0].tolist()) == {0.0, 1.0, 2.0} and not np.array_equal(drawn[0], drawn[1])


def test_averaging_the_views_trains_as_a_store_of_their_means(tmp_path):
    """--views mean reads a K-view store as one view per image, their mean: the same head as
    training on a store that holds those means."""
    x, y, centres = blobs(120, 3, 6, seed=2, views=4)
    xt, yt, _ = blobs(60, 3, 6, seed=3, centres=centres)
    make_store(tmp_path / "k.zarr", {K1: x}, y, views=4, shard_rows=32)
    make_store(tmp_path / "m.zarr", {K1: x.astype(np.float32).mean(1).astype(np.float16)}, y, shard_rows=32)
    make_store(tmp_path / "t.zarr", {K1: xt}, yt, shard_rows=32, split="test")
    common = dict(heads=("linear",), test=tmp_path / "t.zarr", lrs=(1e-2,), wds=(0.0,))
    mean = run(tmp_path / "a", tmp_path / "k.zarr", view_mode="mean", **common)
    plain = run(tmp_path / "b", tmp_path / "m.zarr", **common)
    assert mean["test"] == plain["test"] and mean["config"]["view_mode"] == "mean"
    drawn = run(tmp_path / "c", tmp_path / "k.zarr", **common)
    assert drawn["config"]["view_mode"] == "draw"
    # the results say which view a K-view store's validation carve was scored on
    assert drawn["validation"].endswith("scored on view 0 of its 4")
    assert mean["validation"].endswith("scored on the mean of its 4 views")
    assert "view" not in plain["validation"] and plain["validation"].startswith("10% of train")
    reader = FeatureReader(open_complete(tmp_path / "k.zarr"), (K1,), view_mode="mean")
    assert reader.views == 1 and reader.read(0)[K1].shape == (32, 6, 1, 1)
    with pytest.raises(ValueError, match="view mode must be one of draw, mean"):
        FeatureReader(open_complete(tmp_path / "k.zarr"), (K1,), view_mode="median")


def test_a_signal_planted_only_in_test_is_never_selected(tmp_path):
    """K2 separates train and test perfectly but is noise on the validation rows; K1 is a
    weaker signal everywhere. Selection must follow validation (K1), not test (K2)."""
    n = 400
    x1, y, c = blobs(n, 4, 16, seed=0, spread=4.0, shape=(4, 2, 2))
    strong, _, sc = blobs(n, 4, 16, seed=1, spread=0.1, shape=(4, 2, 2))
    strong, _, _ = blobs(n, 4, 16, seed=1, spread=0.1, shape=(4, 2, 2), centres=sc)
    strong = (
        (sc[y] + 0.1 * np.random.default_rng(2).normal(size=(n, 16))).reshape(n, 4, 2, 2).astype(np.float16)
    )
    val = carve_validation(y, np.ones(n, bool), 0.1, seed=0)
    x2 = strong.copy()
    x2[val] = np.random.default_rng(3).normal(size=(int(val.sum()), 4, 2, 2)) * 3
    make_store(tmp_path / "train.zarr", {K1: x1, K2: x2}, y)
    x1t, yt, _ = blobs(200, 4, 16, seed=4, spread=4.0, shape=(4, 2, 2), centres=c)
    x2t = (
        (sc[yt] + 0.1 * np.random.default_rng(5).normal(size=(200, 16)))
        .reshape(200, 4, 2, 2)
        .astype(np.float16)
    )
    make_store(tmp_path / "test.zarr", {K1: x1t, K2: x2t}, yt, split="test")
    result = run(
        tmp_path,
        tmp_path / "train.zarr",
        test=tmp_path / "test.zarr",
        epochs=10,
        lrs=(1e-2,),
        heads=("linear", "logreg"),
    )
    by_set = {(m["head"], m["feature_set"]): m for m in result["members"]}
    assert (
        by_set[("linear", "t50/b7/p2")]["test"]["top1"] > 95 > by_set[("linear", "t10/b7/p2")]["test"]["top1"]
    )
    assert result["head"]["feature_set"] == "t10/b7/p2"
    assert result["test"]["top1"] == result["members"][result["selected"]]["test"]["top1"] < 95


def test_logreg_matches_scikit_learn_called_directly(two_keys, tmp_path):
    result = run(
        tmp_path,
        two_keys[0],
        test=two_keys[1],
        heads=("logreg",),
        features=("t10/b7/p2",),
        logreg_c=(0.05,),
        val_fraction=0.0,
    )
    store, test = open_complete(two_keys[0]), open_complete(two_keys[1])
    x = store.array(K1)[:].reshape(400, -1).astype(np.float32)
    mean, std = x.astype(np.float64).mean(0), x.astype(np.float64).std(0)

    def z(a: np.ndarray) -> np.ndarray:
        return (a.reshape(len(a), -1).astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)

    ref = LogisticRegression(C=0.05, solver="lbfgs", max_iter=1000, random_state=0).fit(z(x), store.labels())
    expected = 100 * (ref.predict(z(test.array(K1)[:])) == test.labels()).mean()
    assert result["test"]["top1"] == pytest.approx(expected) and result["members"][0]["converged"] is True
    head, *_ = load_head(tmp_path / "results" / f"{result['name']}.head.pt")
    np.testing.assert_allclose(head.fc.weight.detach().numpy(), ref.coef_, rtol=1e-5, atol=1e-6)


def test_concatenated_keys_train_one_head(two_keys, tmp_path):
    result = run(tmp_path, two_keys[0], test=two_keys[1], features=("t10/b7/p2+t50/b7/p2",))
    assert [m["feature_set"] for m in result["members"]] == ["t10/b7/p2+t50/b7/p2"]
    _, meta, fs, _ = load_head(result["head_file"])
    assert fs.in_shape == (8, 2, 2) and len(meta["features"]) == 2


def test_results_record_provenance_members_and_a_table_row(two_keys, tmp_path):
    result = run(tmp_path, two_keys[0], test=two_keys[1], lrs=(1e-3, 1e-2), wds=(0.0, 1e-4))
    saved = json.loads((tmp_path / "results" / f"{result['name']}.json").read_text())
    assert saved["format"] == "diffprobe-probe-results" and len(saved["members"]) == 2 * 2 * 2
    assert saved["stores"]["train"]["key"]["model"] == {"name": "tiny"} and saved["classes"] == [
        f"class{i}" for i in range(4)
    ]
    assert len(saved["test"]["per_class"]) == 4 and saved["timing"]["train"]["samples_per_s"] > 0
    rows = read_table(tmp_path / "results" / "probe_results.csv")
    assert (
        len(rows) == 1
        and rows[0]["test_top1"] == f"{result['test']['top1']:.2f}"
        and rows[0]["weights"] == "random-init"
    )
    again = run(tmp_path, two_keys[0], test=two_keys[1], lrs=(1e-3, 1e-2), wds=(0.0, 1e-4), name="again")
    assert [m["test"] for m in again["members"]] == [m["test"] for m in result["members"]]  # deterministic
    assert len(read_table(tmp_path / "results" / "probe_results.csv")) == 2


# ---------------------------------------------------------------- bad input
def test_a_missing_key_lists_what_the_store_holds(two_keys, tmp_path):
    with pytest.raises(StoreError, match=r"has no features for t150/b24/p2; it holds: t10/b7/p2, t50/b7/p2"):
        run(tmp_path, two_keys[0], features=("t150/b24/p2",))


def test_stores_of_different_models_or_preprocessing_are_refused(tmp_path):
    x, y, _ = blobs(64, 4, 4, seed=0, shape=(4, 1, 1))
    make_store(tmp_path / "a.zarr", {K1: x}, y)
    make_store(tmp_path / "b.zarr", {K1: x}, y, model="adm256-uncond")
    make_store(tmp_path / "c.zarr", {K1: x}, y, preprocessing="resize")
    with pytest.raises(
        ProbeDataError,
        match=r"different models or preprocessing: model.name: a.zarr has 'tiny', b.zarr has 'adm256-uncond'",
    ):
        run(tmp_path, tmp_path / "a.zarr", test=tmp_path / "b.zarr")
    with pytest.raises(ProbeDataError, match=r"preprocessing: a.zarr has 'center-crop', c.zarr has 'resize'"):
        run(tmp_path, tmp_path / "a.zarr", test=tmp_path / "c.zarr")


def test_stores_differing_only_in_micro_batch_or_device_are_probed_together_with_one_warning(
    tmp_path, capsys
):
    x, y, _ = blobs(64, 4, 4, seed=0, shape=(4, 1, 1))
    make_store(tmp_path / "a.zarr", {K1: x}, y, micro_batch=128, device_type="cuda")
    make_store(tmp_path / "b.zarr", {K1: x}, y, split="test", micro_batch=16)
    capsys.readouterr()
    result = run(tmp_path, tmp_path / "a.zarr", test=tmp_path / "b.zarr")
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert (
        len(warned) == 1
        and "device_type: a.zarr has 'cuda', b.zarr has 'cpu'" in warned[0]
        and "micro_batch" in warned[0]
    )
    assert result["warnings"] == [warned[0].removeprefix("warning: ")] and result["test"]["top1"] > 0.5
    make_store(tmp_path / "c.zarr", {K1: x}, y, split="test", micro_batch=16, model="adm256-uncond")
    with pytest.raises(
        ProbeDataError, match="different models or preprocessing: model.name"
    ):  # meaning still refuses
        run(tmp_path, tmp_path / "a.zarr", test=tmp_path / "c.zarr")


def test_stores_numbering_classes_differently_are_refused(tmp_path):
    x, y, _ = blobs(64, 4, 4, seed=0, shape=(4, 1, 1))
    make_store(tmp_path / "a.zarr", {K1: x}, y, classes=["n1", "n2", "n3", "n4"])
    make_store(tmp_path / "b.zarr", {K1: x}, y, split="test", classes=["n1", "n3", "n4", "n5"])
    with pytest.raises(
        ProbeDataError,
        match=r"number their classes differently \(4 vs 4 classes, first difference at label 1\)",
    ):
        run(tmp_path, tmp_path / "a.zarr", test=tmp_path / "b.zarr")


def test_nan_features_are_refused_naming_rows(tmp_path):
    x, y, _ = blobs(64, 4, 4, seed=0, shape=(4, 1, 1))
    x[[5, 9]] = np.nan
    x[12, 0] = np.inf
    make_store(tmp_path / "a.zarr", {K1: x}, y)
    with pytest.raises(
        ProbeDataError, match=r"NaN or inf in 3 rows: 5 \(train/5\), 9 \(train/9\), 12 \(train/12\)"
    ):
        run(tmp_path, tmp_path / "a.zarr")


def test_rows_skipped_at_extraction_are_left_out_not_refused(tmp_path):
    x, y, _ = blobs(64, 4, 4, seed=0, shape=(4, 1, 1))
    valid = np.ones(64, bool)
    valid[3] = False
    x[3] = np.nan
    make_store(tmp_path / "a.zarr", {K1: x}, y, valid=valid)
    result = run(tmp_path, tmp_path / "a.zarr", val_fraction=0.25)
    assert result["stores"]["train"]["rows"] + result["val"]["rows"] == 63


def test_a_class_absent_from_train_is_a_clear_error(tmp_path):
    x, y, _ = blobs(64, 4, 4, seed=0, shape=(4, 1, 1))
    keep = y != 2
    make_store(tmp_path / "a.zarr", {K1: x[keep]}, y[keep], classes=["a", "b", "c", "d"])
    make_store(tmp_path / "t.zarr", {K1: x}, y, split="test", classes=["a", "b", "c", "d"])
    with pytest.raises(ProbeDataError, match=r"test has classes with no training rows: 2 \(c\)"):
        run(tmp_path, tmp_path / "a.zarr", test=tmp_path / "t.zarr")


def test_an_unfinished_store_is_refused(two_keys, tmp_path):
    FeatureStore.open(two_keys[0], mode="r+").mark_incomplete()
    with pytest.raises(StoreError, match="is not complete"):
        run(tmp_path, two_keys[0])


def test_a_grid_without_validation_rows_cannot_select(two_keys, tmp_path):
    with pytest.raises(ProbeDataError, match="no validation rows to choose among them"):
        run(tmp_path, two_keys[0], lrs=(1e-3, 1e-2), val_fraction=0.0)


def test_row_bytes_follow_the_store_dtype(tmp_path):
    """Buffers are sized by what is stored: an fp32 store's rows take twice an fp16 store's."""
    x, y, _ = blobs(16, 2, 8, seed=0)
    key = FeatureKey(10, 7, 2)
    half = make_store(tmp_path / "h.zarr", {key: x}, y)
    single = make_store(tmp_path / "s.zarr", {key: x.astype(np.float32)}, y, dtype="float32")
    assert FeatureReader(half, (key,)).row_bytes() == 2 * 8
    assert FeatureReader(single, (key,)).row_bytes() == 4 * 8
