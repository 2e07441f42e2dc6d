"""`analysis fid` as steps over stores: each side's features are a store that `extract features`
writes in a child process (cached by its arguments; one test here keeps the child, the others run
the step in-process: tests/analysis/conftest.py), and the distance reads the two stores.
Checked against closed forms (pixels as features) and a plain in-test computation with the
network itself; bad inputs end in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.cli import main
from analysis.distance import store_stats
from analysis.fid import DataSpec, FidConfig, fid
from analysis.frechet import frechet_distance, precision_recall
from extract.store.schema import FeatureKey, FeatureStore
from tests.probe.stores import make_store


def images(n=200, size=8, channels=1, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 230, size=(n, size, size, channels)).astype(np.uint8)


def save_npz(path, arr):
    np.savez(path, arr_0=arr)
    return path


def run(capfd, *args):
    """The command, with what it and its child steps printed (file descriptors, not sys.stderr)."""
    with pytest.raises(SystemExit) as done:
        main(["fid", "--no-progress", *map(str, args)])
    out = capfd.readouterr()
    return done.value.code, out.out, out.err


@pytest.mark.slow
def test_a_set_against_itself_is_zero_and_a_shifted_copy_is_the_closed_form(in_process_features, tmp_path):
    x = images()
    a = save_npz(tmp_path / "a.npz", x)
    same = fid(FidConfig(fake=a, real=a, features="pixels", cache=tmp_path / "c", progress=False))
    assert abs(same.fd) < 1e-6 and (same.precision, same.recall) == (1.0, 1.0)
    shifted = fid(
        FidConfig(
            fake=save_npz(tmp_path / "b.npz", x + 10),
            real=a,
            features="pixels",
            cache=tmp_path / "c",
            progress=False,
        )
    )
    assert shifted.fd == pytest.approx(64 * 10.0**2, rel=1e-9)  # |mu_a - mu_b|^2 with the same covariance
    xf = x.reshape(200, -1).astype(np.float64)
    assert (shifted.precision, shifted.recall) == pytest.approx(precision_recall(xf, xf + 10))
    assert shifted.metric == "FD (pixels)" and shifted.n_real == shifted.n_fake == 200


def test_store_statistics_equal_the_batch_ones(tmp_path):
    x = images(n=300, size=4, channels=3).reshape(300, -1).astype(np.float32)
    key = FeatureKey(0, 0, None)
    make_store(tmp_path / "s.zarr", {key: x}, np.zeros(300, np.int64), shard_rows=64)
    store = FeatureStore.open(tmp_path / "s.zarr")
    stats, sample = store_stats(store, key, 50, 0)
    np.testing.assert_allclose(stats.mean, x.mean(0, dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-9)
    assert stats.n == 300 and sample.shape == (50, 48)


@pytest.mark.slow
def test_the_classifier_distance_equals_the_network_computed_in_the_test(in_process_features, tmp_path):
    """The chain (two stores, then the distance) against the network run here on the same
    images, statistics and precision/recall taken by the public definitions."""
    from extract.models.classifier import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN().eval()
    torch.save(net.state_dict(), tmp_path / "clf.pt")
    real, fake = images(n=120, size=32, seed=1), images(n=90, size=32, seed=2) // 2 + 40
    result = fid(
        FidConfig(
            fake=save_npz(tmp_path / "f.npz", fake),
            real=save_npz(tmp_path / "r.npz", real),
            features=f"classifier:{tmp_path / 'clf.pt'}",
            batch_size=32,
            cache=tmp_path / "c",
            progress=False,
        )
    )
    with torch.no_grad():
        fr, ff = (
            net.features(torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1).double().numpy()
            for a in (real, fake)
        )
    expected = frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert result.fd == pytest.approx(expected, rel=1e-6) and result.fd > 0
    assert (result.precision, result.recall) == pytest.approx(precision_recall(fr, ff), abs=1e-12)
    # the kernel distance of the same rows, the samples first; no Inception Score here
    from analysis.gen_metrics import kernel_distance

    assert result.kid == pytest.approx(
        kernel_distance(ff.astype(np.float32), fr.astype(np.float32), 100, 90), rel=1e-5
    )
    assert (
        result.kid_metric == "KD (classifier)"
        and result.metric == "FD (classifier)"
        and result.kid_subset_size == 90
    )
    assert result.inception_score is None and any("needs --features inception" in n for n in result.notes)


@pytest.mark.slow
def test_a_datasets_features_are_a_store_made_once(tmp_path, fmnist_env):
    fake = save_npz(tmp_path / "f.npz", images(n=20, size=32))
    cfg = FidConfig(
        fake=fake,
        data=DataSpec("fashion-mnist", "test"),
        features="pixels",
        cache=tmp_path / "cache",
        progress=False,
    )
    first = fid(cfg)
    assert first.n_real == 32 and first.real["channels"] == 1 and first.real["image_size"] == 32
    real_store = first.stores[0]
    again = fid(cfg)
    assert again.fd == first.fd and again.stores == first.stores
    # reused whole: nothing computed the second time
    assert FeatureStore.open(real_store).attrs["last_run"]["images"] == 0
    other = fid(FidConfig(**{**cfg.__dict__, "data": DataSpec("fashion-mnist", "test", limit=10)}))
    assert (
        other.n_real == 10
        and other.stores[0] != real_store
        and len(list((tmp_path / "cache").glob("fashion-mnist-*.zarr"))) == 2
    )


@pytest.mark.slow
def test_class_shares_of_samples_and_real_images_by_the_classifiers_argmax(
    in_process_features, tmp_path, fmnist_env
):
    """Each side's share of every class (the classifier's argmax over its logits, computed here
    with the network itself for the samples) and their total variation distance."""
    from analysis.gen_metrics import class_shares, total_variation
    from extract.models.classifier import SmallCNN

    torch.manual_seed(1)
    net = SmallCNN().eval()
    torch.save(net.state_dict(), tmp_path / "clf.pt")
    fake = images(n=40, size=32, seed=3)
    cfg = FidConfig(
        fake=save_npz(tmp_path / "f.npz", fake),
        data=DataSpec("fashion-mnist", "test"),
        features=f"classifier:{tmp_path / 'clf.pt'}",
        k=2,
        kid_subset_size=20,
        cache=tmp_path / "c",
        progress=False,
    )
    result = fid(cfg)
    with torch.no_grad():
        logits = net(torch.from_numpy(fake).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
    expected = np.bincount(logits.argmax(1), minlength=10) / 40
    assert result.class_shares == pytest.approx(tuple(expected), abs=1e-12)
    real = np.asarray(result.real_class_shares)
    # 32 real test images
    assert (
        real.shape == (10,) and real.sum() == pytest.approx(1.0) and np.all(real * 32 == np.round(real * 32))
    )
    assert (
        result.class_tv == pytest.approx(0.5 * np.abs(expected - real).sum(), abs=1e-12)
        and "class shares TV" in result.line()
    )
    off = fid(FidConfig(**{**cfg.__dict__, "class_balance": False}))
    assert off.class_shares is None and off.fd == result.fd
    assert class_shares(
        np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 0.0]])
    ) == pytest.approx([0.25, 0.5, 0.25])
    assert total_variation([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == 0.5 and total_variation([1, 0], [1, 0]) == 0.0
    with pytest.raises(ValueError, match="shares over"):
        total_variation([1.0], [0.5, 0.5])


@pytest.mark.slow
def test_the_floor_compares_the_two_halves_of_a_split(in_process_features, tmp_path, fmnist_env, capfd):
    code, out, err = run(
        capfd,
        "--data",
        "fashion-mnist",
        "--split-half",
        "--features",
        "pixels",
        "--image-size",
        32,
        "--cache",
        tmp_path,
        "--out",
        tmp_path / "floor.json",
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "floor.json").read_text())
    assert (
        saved["n_real"] == saved["n_fake"] == 16
        and saved["real"]["half"] == "first"
        and saved["fake"]["half"] == "second"
    )
    assert saved["fd"] > 0


@pytest.mark.slow
def test_statistics_saved_from_one_run_stand_for_the_real_side_of_the_next(
    in_process_features, tmp_path, capfd
):
    ref, fake = (
        save_npz(tmp_path / "ref.npz", images(n=40, size=8)),
        save_npz(tmp_path / "fake.npz", images(n=30, size=8, seed=3)),
    )
    code, out, err = run(
        capfd,
        "--fake",
        fake,
        "--real",
        ref,
        "--features",
        "pixels",
        "--save-stats",
        tmp_path / "stats.npz",
        "--cache",
        tmp_path / "c",
        "--out",
        tmp_path / "a.json",
    )
    assert code == 0, err
    code, out, err = run(
        capfd,
        "--fake",
        fake,
        "--real",
        tmp_path / "stats.npz",
        "--features",
        "pixels",
        "--cache",
        tmp_path / "c",
        "--out",
        tmp_path / "b.json",
    )
    assert code == 0, err
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert b["fd"] == pytest.approx(a["fd"], rel=1e-12) and (b["precision"], b["recall"]) == (
        a["precision"],
        a["recall"],
    )


@pytest.mark.slow
def test_inception_loads_a_local_weights_file(in_process_features, tmp_path, capfd):
    from extract.models.feature_nets import inception_network

    x = images(n=6, size=16, channels=1)
    # the real file's architecture, loaded weights-only
    torch.save(inception_network(None).state_dict(), tmp_path / "inception.pth")
    npz = save_npz(tmp_path / "x.npz", x)
    code, out, err = run(
        capfd,
        "--fake",
        npz,
        "--real",
        npz,
        "--inception-weights",
        tmp_path / "inception.pth",
        "--k",
        2,
        "--cache",
        tmp_path / "c",
        "--out",
        tmp_path / "r.json",
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["metric"] == "FD (Inception-v3, non-standard weights)" and abs(saved["fd"]) < 1e-3
    assert (
        saved["features"]["sha256"]
        and saved["features"]["standard"] is False
        and saved["features"]["weights"] == "inception.pth"
    )


@pytest.mark.slow
def test_a_wrong_inception_weights_file_is_refused_in_one_line(in_process_features, tmp_path, capfd):
    npz = save_npz(tmp_path / "x.npz", images(n=6, size=8))
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    (tmp_path / "text.pth").write_text("not weights")
    for path, message in (
        (tmp_path / "wrong.pth", "is not torch-fidelity's Inception-v3"),
        (tmp_path / "text.pth", "not a loadable weights-only torch checkpoint"),
    ):
        code, out, err = run(
            capfd, "--fake", npz, "--real", npz, "--inception-weights", path, "--cache", tmp_path / "c"
        )
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = run(capfd, "--fake", npz, "--real", npz, "--cache", tmp_path / "c")
    assert code == 2 and "needs --inception-weights FILE" in err


def write_pngs(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(folder / f"{i:06d}.png")
    return folder


@pytest.mark.slow
def test_a_folder_of_pngs_is_a_sample_set(in_process_features, tmp_path):
    x = images(n=100, size=8)
    folder, npz = write_pngs(tmp_path / "pngs", list(x)), save_npz(tmp_path / "x.npz", x)
    result = fid(
        FidConfig(fake=folder, real=npz, features="pixels", k=2, cache=tmp_path / "c", progress=False)
    )
    assert abs(result.fd) < 1e-6 and result.fake["path"] == str(folder.resolve()) and result.n_fake == 100


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(in_process_features, tmp_path, capfd):
    ref = save_npz(tmp_path / "ref.npz", images(n=10, size=8))
    (tmp_path / "empty").mkdir()
    mixed_sizes = write_pngs(tmp_path / "sizes", [images(1, 8)[0], images(1, 8)[0], images(1, 6)[0]])
    mixed_kinds = write_pngs(tmp_path / "kinds", [images(1, 8, 1)[0], images(1, 8, 3)[0]])
    rgb = write_pngs(tmp_path / "rgb", list(images(10, 8, 3)))
    gray_stats = tmp_path / "gray-stats.npz"
    cache = tmp_path / "c"
    npy, text = tmp_path / "mu.npy", tmp_path / "notes.npz"
    np.save(npy, np.zeros(4))
    text.write_text("not an archive")
    code, _, err = run(
        capfd,
        "--fake",
        ref,
        "--real",
        ref,
        "--features",
        "pixels",
        "--save-stats",
        gray_stats,
        "--cache",
        cache,
    )
    assert code == 0, err
    cases = [
        (["--fake", tmp_path / "empty", "--real", ref], "no PNG images"),
        (
            ["--fake", mixed_sizes, "--real", ref],
            "mixed images, 8x8 grayscale (2, e.g. 000000.png); 6x6 grayscale (1, e.g. 000002.png)",
        ),
        (["--fake", mixed_kinds, "--real", ref], "mixed images"),
        (["--fake", rgb, "--real", gray_stats], "holds statistics of grayscale images, samples are RGB"),
        (["--fake", rgb, "--real", ref], "holds grayscale images, samples are RGB"),
        (["--fake", tmp_path / "nowhere", "--real", ref], "samples not found"),
        (["--fake", ref], "give the real side as --real FILE.npz or as --data NAME"),
        (["--fake", ref, "--real", ref, "--features", "nonsense"], "--features 'nonsense': choose inception"),
        (["--fake", ref, "--real", npy], "a single array, not an .npz"),
        (["--fake", ref, "--real", text], "not a readable .npz"),
    ]
    for args, message in cases:
        code, _, err = run(capfd, "--features", "pixels", *args, "--cache", cache)
        assert (
            code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        ), (args, err)


@pytest.mark.slow
def test_the_classifier_features_refuse_rgb_and_other_sizes(in_process_features, tmp_path, capfd):
    from extract.models.classifier import SmallCNN

    torch.save(SmallCNN().state_dict(), tmp_path / "clf.pt")
    gray = save_npz(tmp_path / "g.npz", images(n=8, size=32))
    code, out, err = run(
        capfd,
        "--fake",
        gray,
        "--real",
        gray,
        "--features",
        f"classifier:{tmp_path / 'clf.pt'}",
        "--k",
        2,
        "--cache",
        tmp_path / "c",
    )
    assert (
        code == 0 and out.startswith("FD (classifier) ") and abs(float(out.split()[2].rstrip(","))) < 1e-6
    ), err
    for arr, message in (
        (images(n=8, size=32, channels=3), "classifier features take grayscale images"),
        (images(n=8, size=28), "take 32x32 images"),
    ):
        bad = save_npz(tmp_path / "bad.npz", arr)
        code, out, err = run(
            capfd,
            "--fake",
            bad,
            "--real",
            bad,
            "--features",
            f"classifier:{tmp_path / 'clf.pt'}",
            "--cache",
            tmp_path / "c",
        )
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
