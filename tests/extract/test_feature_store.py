"""`extract features`: a feature network's image-level features as a store (what Fréchet
distances read), checked against the network run in the test, across shard sizes, and for
the halves of a split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.cli import main
from extract.models.feature_nets import FeatureSpec, build_extractor
from extract.models.feature_store import FEATURE_KEY
from extract.store.schema import FeatureStore


def images(n, size, channels=1, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels)).astype(np.uint8)


def extract(*args) -> int:
    with pytest.raises(SystemExit) as done:
        main(["features", "--no-progress", *map(str, args)])
    return done.value.code


def features(path) -> np.ndarray:
    store = FeatureStore.open(path)
    return np.asarray(store.array(FEATURE_KEY)[:])


def test_pixel_features_are_the_images_and_the_store_says_what_they_are(tmp_path):
    x = images(30, 8, 3)
    np.savez(tmp_path / "s.npz", arr_0=x)
    assert (
        extract(
            "--features",
            "pixels",
            "--data",
            "samples",
            "--data-root",
            tmp_path / "s.npz",
            "--split",
            "all",
            "--out",
            tmp_path / "p.zarr",
        )
        == 0
    )
    got = features(tmp_path / "p.zarr")
    assert got.dtype == np.float32 and got.shape == (30, 192)
    np.testing.assert_array_equal(got, x.reshape(30, -1))
    made = FeatureStore.open(tmp_path / "p.zarr").attrs["provenance"]
    assert (
        made["kind"] == "features"
        and made["images"]["image_size"] == 8
        and made["images"]["channels"] == 3
        and made["images"]["data"] == "samples"
    )


def test_classifier_features_equal_the_network_and_do_not_depend_on_the_shard_size(tmp_path):
    from extract.models.classifier import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN().eval()
    torch.save(net.state_dict(), tmp_path / "clf.pt")
    x = images(45, 32)
    np.savez(tmp_path / "s.npz", arr_0=x)
    common = [
        "--features",
        f"classifier:{tmp_path / 'clf.pt'}",
        "--data",
        "samples",
        "--data-root",
        tmp_path / "s.npz",
        "--split",
        "all",
        "--batch-size",
        10,
    ]
    stores = {}
    for shard_rows in (7, 64):
        from extract.models.feature_store import FeatureStoreConfig, extract_features
        from extract.store.config import DataSelection, StoreOptions

        cfg = FeatureStoreConfig(
            store=StoreOptions(out=tmp_path / f"s{shard_rows}.zarr", shard_rows=shard_rows, progress=False),
            selection=DataSelection(data="samples", data_root=tmp_path / "s.npz", split="all"),
            features=f"classifier:{tmp_path / 'clf.pt'}",
            batch_size=10,
        )
        extract_features(cfg)
        stores[shard_rows] = features(tmp_path / f"s{shard_rows}.zarr")
    assert stores[7].tobytes() == stores[64].tobytes()
    with torch.no_grad():
        direct = net.features(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
    np.testing.assert_allclose(stores[7], direct, rtol=1e-5, atol=1e-6)
    # the same arguments again: the store is reused
    assert extract(*common, "--out", tmp_path / "s64.zarr") == 0


def test_the_two_halves_split_the_rows(tmp_path, fmnist_env):
    for half in ("first", "second"):
        assert (
            extract(
                "--features",
                "pixels",
                "--data",
                "fashion-mnist",
                "--split",
                "train",
                "--half",
                half,
                "--image-size",
                28,
                "--out",
                tmp_path / f"{half}.zarr",
            )
            == 0
        )
    a, b = (FeatureStore.open(tmp_path / f"{h}.zarr") for h in ("first", "second"))
    ia, ib = set(a.ids()), set(b.ids())
    assert len(ia) == len(ib) > 0 and not ia & ib


def test_inception_runs_with_random_weights():
    net = build_extractor(FeatureSpec("inception", random_init=True))
    feats = net(images(6, 16))
    assert feats.shape == (6, 2048) and np.isfinite(feats).all() and feats.std() > 0
    assert (
        net.record["implementation"].startswith("torch-fidelity") and net.record["weights"] == "random-init"
    )
