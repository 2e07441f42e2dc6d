"""`analysis fid`: Fréchet distance through image sets and feature extractors, the statistics
cache, the Inception path (random weights, no download) and one-line errors for bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import analysis.features as features
import analysis.fid as fidmod
from analysis.cli import main
from analysis.features import Extractor, FeatureSpec, build_extractor
from analysis.fid import DataSpec, FidConfig, compute_stats, fid
from analysis.frechet import precision_recall


@pytest.fixture
def pixels(monkeypatch):
    """A registered feature family whose features are the pixels themselves, so distances
    have closed forms."""
    monkeypatch.setitem(features.FAMILIES, "pixels", lambda spec, arg: Extractor("pixels", {"features": "pixels"}, -1, lambda x: x.reshape(len(x), -1)))


def images(n=200, size=8, channels=1, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 230, size=(n, size, size, channels)).astype(np.uint8)


def save_npz(path, arr):
    np.savez(path, arr_0=arr)
    return path


def run(capsys, *args):
    with pytest.raises(SystemExit) as done:
        main(["fid", "--no-progress", *map(str, args)])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_a_set_against_itself_is_zero_and_a_shifted_copy_is_the_closed_form(tmp_path, pixels):
    x = images()
    a = save_npz(tmp_path / "a.npz", x)
    same = fid(FidConfig(fake=a, real=a, features=FeatureSpec("pixels"), progress=False))
    assert abs(same.fd) < 1e-6 and (same.precision, same.recall) == (1.0, 1.0)
    shifted = fid(FidConfig(fake=save_npz(tmp_path / "b.npz", x + 10), real=a, features=FeatureSpec("pixels"), progress=False))
    assert shifted.fd == pytest.approx(64 * 10.0**2, rel=1e-9)  # |mu_a - mu_b|^2 with the same covariance
    xf = x.reshape(200, -1).astype(np.float64)
    assert (shifted.precision, shifted.recall) == pytest.approx(precision_recall(xf, xf + 10))


def test_streamed_statistics_equal_the_batch_ones(pixels):
    x = images(n=300, size=4, channels=3)
    s = compute_stats(npz_images_from(x), build_extractor(FeatureSpec("pixels")), batch=7, pr_rows=50)
    flat = x.reshape(300, -1).astype(np.float64)
    np.testing.assert_allclose(s.mu, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.sigma, np.cov(flat, rowvar=False), rtol=1e-9, atol=1e-9)
    assert s.n == 300 and s.sample.shape == (50, 48)


def npz_images_from(x):
    return fidmod.ImageSet({"kind": "array"}, len(x), x.shape[1], x.shape[-1], lambda a, b: x[a:b])


def test_dataset_statistics_are_cached_under_their_key(tmp_path, fmnist_env, pixels, monkeypatch):
    fake = save_npz(tmp_path / "f.npz", images(n=20, size=32))
    cfg = FidConfig(fake=fake, data=DataSpec("fashion-mnist", "test"), features=FeatureSpec("pixels"), cache=tmp_path / "cache", progress=False)
    first = fid(cfg)
    assert first.n_real == 32 and first.real["channels"] == 1 and first.stats_cache
    calls = []
    real_compute = fidmod.compute_stats
    monkeypatch.setattr(fidmod, "compute_stats", lambda images, *a, **k: calls.append(images.record.get("kind")) or real_compute(images, *a, **k))
    again = fid(cfg)
    assert again.fd == first.fd and calls == ["npz"]  # the real side came from the cache
    fid(FidConfig(**{**cfg.__dict__, "data": DataSpec("fashion-mnist", "test", limit=10)}))
    assert calls[-2:] == ["dataset", "npz"] and len(list((tmp_path / "cache").glob("*.npz"))) == 2  # another selection, another key


def test_the_floor_compares_the_two_halves_of_a_split(tmp_path, fmnist_env, pixels, capsys):
    code, out, err = run(capsys, "--data", "fashion-mnist", "--split-half", "--features", "pixels", "--image-size", 32, "--cache", tmp_path,
                         "--out", tmp_path / "floor.json")  # fmt: skip
    assert code == 0, err
    saved = json.loads((tmp_path / "floor.json").read_text())
    assert saved["n_real"] == saved["n_fake"] == 16 and saved["real"]["half"] == "first" and saved["fake"]["half"] == "second"
    assert saved["fd"] > 0


def test_inception_runs_with_random_weights_and_loads_a_local_weights_file(tmp_path, capsys):
    x = images(n=6, size=16, channels=1)
    net = build_extractor(FeatureSpec("inception", random_init=True))
    feats = net(x)
    assert feats.shape == (6, 2048) and np.isfinite(feats).all() and feats.std() > 0
    assert net.record["implementation"].startswith("torch-fidelity") and net.record["weights"] == "random-init"
    # the same architecture's weights from a file (what the real weights file holds): loaded weights-only, its sha256 recorded
    torch.save(features.inception_network(None).state_dict(), tmp_path / "inception.pth")
    npz = save_npz(tmp_path / "x.npz", x)
    code, out, err = run(capsys, "--fake", npz, "--real", npz, "--inception-weights", tmp_path / "inception.pth", "--k", 2, "--out", tmp_path / "r.json")
    assert code == 0, err
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["metric"] == "FD (Inception-v3, non-standard weights)" and abs(saved["fd"]) < 1e-3
    assert saved["features"]["sha256"] and saved["features"]["standard"] is False and saved["features"]["weights"] == "inception.pth"


def test_a_wrong_inception_weights_file_is_refused_in_one_line(tmp_path, capsys):
    npz = save_npz(tmp_path / "x.npz", images(n=6, size=8))
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    (tmp_path / "text.pth").write_text("not weights")
    for path, message in ((tmp_path / "wrong.pth", "is not torch-fidelity's Inception-v3"), (tmp_path / "text.pth", "not a loadable weights-only torch checkpoint")):
        code, out, err = run(capsys, "--fake", npz, "--real", npz, "--inception-weights", path)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = run(capsys, "--fake", npz, "--real", npz)
    assert code == 2 and "needs --inception-weights FILE" in err


def write_pngs(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(folder / f"{i:06d}.png")
    return folder


def test_bad_inputs_are_one_line_errors(tmp_path, capsys, pixels):
    ref = save_npz(tmp_path / "ref.npz", images(n=10, size=8))
    (tmp_path / "empty").mkdir()
    mixed_sizes = write_pngs(tmp_path / "sizes", [images(1, 8)[0], images(1, 8)[0], images(1, 6)[0]])
    mixed_kinds = write_pngs(tmp_path / "kinds", [images(1, 8, 1)[0], images(1, 8, 3)[0]])
    rgb = write_pngs(tmp_path / "rgb", list(images(10, 8, 3)))
    gray_stats = tmp_path / "gray-stats.npz"
    code, _, err = run(capsys, "--fake", ref, "--real", ref, "--features", "pixels", "--save-stats", gray_stats)
    assert code == 0, err
    cases = [
        (["--fake", tmp_path / "empty", "--real", ref], "no PNG images"),
        (["--fake", mixed_sizes, "--real", ref], "mixed images, 8x8 grayscale (2, e.g. 000000.png); 6x6 grayscale (1, e.g. 000002.png)"),
        (["--fake", mixed_kinds, "--real", ref], "mixed images"),
        (["--fake", rgb, "--real", gray_stats], "holds statistics of grayscale images, samples are RGB"),
        (["--fake", rgb, "--real", ref], "holds grayscale images, samples are RGB"),
        (["--fake", tmp_path / "nowhere", "--real", ref], "samples folder not found"),
        (["--fake", ref], "give the real side as --real FILE.npz or as --data NAME"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, *args, "--features", "pixels")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)


def test_the_classifier_features_refuse_rgb_and_other_sizes(tmp_path, capsys):
    from analysis.classifier import SmallCNN

    torch.save(SmallCNN().state_dict(), tmp_path / "clf.pt")
    gray = save_npz(tmp_path / "g.npz", images(n=8, size=32))
    code, out, err = run(capsys, "--fake", gray, "--real", gray, "--features", f"classifier:{tmp_path / 'clf.pt'}", "--k", 2)
    assert code == 0 and out.startswith("FD (classifier) ") and abs(float(out.split()[2].rstrip(","))) < 1e-6, err
    for arr, message in ((images(n=8, size=32, channels=3), "classifier features take grayscale images"), (images(n=8, size=28), "take 32x32 images; these are 28x28")):
        bad = save_npz(tmp_path / "bad.npz", arr)
        code, out, err = run(capsys, "--fake", bad, "--real", bad, "--features", f"classifier:{tmp_path / 'clf.pt'}")
        assert code == 2 and message in err, err


def test_the_generation_table_puts_the_probe_accuracy_of_the_same_weights_beside_the_fd(tmp_path, capsys):
    from analysis.report import build_report

    samples = tmp_path / "samples-trained"
    samples.mkdir()
    (samples / "samples.json").write_text(json.dumps({"provenance": {"model": "demo-fmnist", "weights": "demo.pt@abc", "sampler": "ddim", "steps": 50}}))
    result = {"fd": 12.3456, "precision": 0.5, "recall": 0.25, "n_real": 10000, "n_fake": 1000, "metric": "FD (classifier)",
              "features": {"features": "classifier"}, "real": {"data": "fashion-mnist", "split": "test"}, "fake": {"kind": "folder", "path": str(samples)}}  # fmt: skip
    (tmp_path / "fd.json").write_text(json.dumps(result))
    probes = tmp_path / "probe_results.csv"
    probes.write_text("name,model,weights,features,val_top1,test_top1\nA,demo-fmnist,demo.pt@abc,t10/b9/full,90.0,91.0\n"
                      "B,demo-fmnist,demo.pt@abc,t10/b8/full,91.0,89.5\nC,demo-fmnist,random-init,t10/b8/full,95.0,95.0\n")  # fmt: skip
    (tmp_path / "clf.json").write_text(json.dumps({"test_top1": 91.91}))
    with pytest.raises(SystemExit) as done:
        main(["gen-table", "--fd", f"trained={tmp_path / 'fd.json'}", "--probe-table", str(probes), "--feature-net", str(tmp_path / "clf.json"),
              "--out", str(tmp_path / "gen.json")])  # fmt: skip
    assert done.value.code == 0, capsys.readouterr().err
    (row,) = json.loads((tmp_path / "gen.json").read_text())["rows"]
    assert (row["fd"], row["probe_test_top1"], row["probe_features"], row["feature_net_test_top1"]) == (12.346, "89.5", "t10/b8/full", 91.91)
    assert (tmp_path / "gen.csv").read_text().splitlines()[1].startswith("trained,demo-fmnist,demo.pt@abc,ddim,50,1000")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "probe_results.csv").write_text((tmp_path / "probe_results.csv").read_text().replace("name,model", "name,head,t,b,pool,train_rows,test_top5,model")
                                                        .replace("\nA,", "\nA,linear,10,9,full,1,99,").replace("\nB,", "\nB,linear,10,8,full,1,99,").replace("\nC,", "\nC,linear,10,8,full,1,99,"))  # fmt: skip
    text = build_report(tmp_path / "res", None, tmp_path / "rep", generation=tmp_path / "gen.json").read_text()
    assert "## Generation" in text and "| trained | demo.pt@abc | ddim, 50 | 1000 | fashion-mnist test, 10000 images | 12.346 | 0.5 | 0.25 | 89.5 |" in text


def test_the_generation_tables_bad_inputs_are_one_line_errors(tmp_path, capsys):
    not_json = tmp_path / "notes.txt"
    not_json.write_text("not json\n")
    other_json = tmp_path / "other.json"
    other_json.write_text(json.dumps({"rows": []}))
    good = tmp_path / "fd.json"
    good.write_text(json.dumps({"fd": 1.0, "precision": None, "recall": None, "n_real": 2, "n_fake": 2, "metric": "FD (pixels)",
                                "features": {"features": "pixels"}, "real": {"path": "r.npz"}, "fake": {"path": "f.npz"}}))  # fmt: skip
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    cases = [
        (["--fd", f"x={tmp_path / 'nowhere.json'}"], "Fréchet distance result (written by `analysis fid --out`) not found"),
        (["--fd", f"x={not_json}"], "not a Fréchet distance result"),
        (["--fd", f"x={other_json}"], "not a Fréchet distance result"),
        (["--fd", f"x={good}", "--probe-table", str(tmp_path / "nowhere.csv")], "probe results table not found"),
        (["--fd", f"x={good}", "--probe-table", str(bad_csv)], "not a probe results table"),
        (["--fd", f"x={good}", "--feature-net", str(not_json)], "not a feature classifier's training record"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as done:
            main(["gen-table", *args, "--out", str(tmp_path / "gen.json")])
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert not (tmp_path / "gen.json").exists()
