"""The BiGAN baseline: shapes, deterministic and exactly resumable training, export, the encoder
family's store (numerics vs a plain hooked forward), samples that `analysis fid` reads, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import extract.generate.bigan_train as bt
from extract.cli import cli
from extract.data.samples import samples as samples_source
from extract.data.sources import fashion_mnist, preprocess
from extract.generate.bigan_sample import sample_bigan
from extract.generate.bigan_train import BiganTrainConfig, export_bigan, read_log, train
from extract.models.bigan_nets import BiGAN, BiganArch, load_bigan, parameter_counts
from extract.models.families import family_of_kind
from extract.models.staged import NETWORKS, StagedConfig, extract_staged
from extract.models.weights import CheckpointError
from extract.store.config import from_flat
from extract.store.schema import FeatureKey, FeatureStore

SMALL = dict(z_dim=8, width=8)


def config(out, **kw) -> BiganTrainConfig:
    base = dict(out=str(out), batch_size=8, max_images=48, save_every=2, log_every=1, threads=1, **SMALL)
    return BiganTrainConfig(**{**base, **kw})


def state(out):
    return torch.load(out / "train_state.pt", weights_only=True)


def test_shapes_and_parameter_counts():
    model = BiGAN(BiganArch())
    z = torch.randn(3, 64)
    x = model.generator(z)
    assert x.shape == (3, 1, 32, 32) and x.abs().max() <= 1
    assert model.encoder(x).shape == (3, 64) and model.discriminator(x, z).shape == (3,)
    counts = parameter_counts(model)
    assert counts["total"] == sum(counts[k] for k in ("generator", "encoder", "discriminator")) < 5_000_000
    maps = [m.shape for m in _hooked(model.encoder.eval(), x)]
    assert maps == [(3, 64, 16, 16), (3, 128, 8, 8), (3, 256, 4, 4), (3, 64)]
    # one layer name per block of the encoder, the code last
    assert len(NETWORKS["bigan-encoder"].layers) == len(model.encoder.blocks()) == 4
    assert NETWORKS["bigan-encoder"].layers[-1] == "code z"


def _hooked(encoder, x):
    """A plain reference: each stage applied by hand, no hooks of the family's."""
    out, h = [], x
    with torch.no_grad():
        for stage in encoder.stages:
            h = stage(h)
            out.append(h)
        out.append(encoder.head(h))
    return out


def test_training_is_deterministic_changes_weights_and_logs(tmp_path, fmnist_env):
    a = train(config(tmp_path / "a", max_images=32))
    train(config(tmp_path / "b", max_images=32))
    init = bt.build(config(tmp_path / "x"))[0].state_dict()
    sa, sb = state(tmp_path / "a"), state(tmp_path / "b")
    assert a["step"] == 4 and a["parameters"]["total"] > 0
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert any(not torch.equal(sa["model"][k], init[k]) for k in init if k.startswith("encoder."))
    assert any(not torch.equal(sa["model"][k], init[k]) for k in init if k.startswith("discriminator."))
    log = read_log(tmp_path / "a")
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(
        r["loss_d"] > 0 and 0 <= r["d_acc"] <= 1 for r in log
    )
    meta = json.loads((tmp_path / "a" / "train_meta.json").read_text())
    assert (
        meta["config"]["seed"] == 0
        and meta["arch"]["z_dim"] == 8
        and meta["version"]
        and meta["torch_version"]
        and meta["data_fingerprint"]
    )


def test_the_discriminator_learns_on_tiny_data(tmp_path, fmnist_env):
    train(config(tmp_path / "r", max_images=8 * 30, lr=1e-3, save_every=100))
    log = read_log(tmp_path / "r")
    first, last = np.mean([r["loss_d"] for r in log[:5]]), np.mean([r["loss_d"] for r in log[-5:]])
    assert last < first and np.mean([r["d_acc"] for r in log[-5:]]) > 0.5


def test_a_killed_run_resumes_to_the_same_weights_as_an_unbroken_one(tmp_path, fmnist_env, monkeypatch):
    train(config(tmp_path / "whole"))
    calls, real = {"n": 0}, bt.train_step

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(bt, "train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "broken"))
    assert state(tmp_path / "broken")["step"] == 4
    monkeypatch.setattr(bt, "train_step", real)
    summary = train(config(tmp_path / "broken"))
    assert summary["step"] == 6 and summary["images_seen"] == 48
    whole, resumed = state(tmp_path / "whole"), state(tmp_path / "broken")
    for k in whole["model"]:
        assert torch.equal(whole["model"][k], resumed["model"][k]), k
    for opt in ("opt_d", "opt_ge"):
        for i, s in whole[opt]["state"].items():
            assert all(torch.equal(v, resumed[opt]["state"][i][n]) for n, v in s.items()), (opt, i)
    assert [r["step"] for r in read_log(tmp_path / "broken")] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="cannot resume with a different batch_size"):
        train(config(tmp_path / "broken", batch_size=4))


@pytest.fixture
def weights(tmp_path, fmnist_env):
    train(config(tmp_path / "run", max_images=16, keep_every=1))
    export_bigan(tmp_path / "run", tmp_path / "bigan.pt")
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "bigan-step1.pt",
        "bigan-step2.pt",
    ]
    return tmp_path / "bigan.pt"


def test_export_loads_weights_only_and_equals_the_run(weights, tmp_path):
    loaded = torch.load(weights, weights_only=True)
    run = state(tmp_path / "run")["model"]
    assert set(loaded) == set(run) and all(torch.equal(loaded[k], run[k]) for k in run)
    model = load_bigan(weights)
    assert model.arch.z_dim == 8 and model.arch.width == 8 and not model.training
    assert json.loads((tmp_path / "bigan.train_meta.json").read_text())["step"] == 2


def test_store_rows_equal_a_plain_forward_of_the_encoder(weights, tmp_path):
    out = tmp_path / "s.zarr"
    line = extract_staged(
        from_flat(
            StagedConfig,
            network="bigan-encoder",
            out=out,
            weights=weights,
            split="test",
            pools=(1, None),
            limit=10,
            batch_size=4,
            shard_rows=6,
            progress=False,
        )
    )
    assert "blocks [1, 2, 3, 4]" in line
    store = FeatureStore.open(out)
    assert (
        store.complete
        and store.attrs["key"]["weights"]["sha256"]
        and store.attrs["provenance"]["kind"] == "bigan"
    )
    assert family_of_kind("bigan").part("run") is extract_staged
    source = fashion_mnist(None, "test")
    idx = [int(i) for i in store.index()]
    x = torch.stack([preprocess(source.load(i), 32, 1) for i in idx])
    ref = _hooked(load_bigan(weights).encoder, x)
    ref[3] = ref[3][:, :, None, None]
    for b in range(1, 5):
        full = torch.from_numpy(store.array(FeatureKey(0, b, None))[:].astype(np.float32))
        torch.testing.assert_close(full, ref[b - 1].half().float(), rtol=2e-3, atol=2e-3)
        pooled = torch.from_numpy(store.array(FeatureKey(0, b, 1))[:].astype(np.float32))
        torch.testing.assert_close(
            pooled, ref[b - 1].mean((2, 3), keepdim=True).half().float(), rtol=3e-3, atol=3e-3
        )
    digests = store.content_hashes()
    assert digests is not None and digests.shape == (10, 16) and digests.any(axis=1).all()
    again = extract_staged(
        from_flat(
            StagedConfig,
            network="bigan-encoder",
            out=out,
            weights=weights,
            split="test",
            pools=(1, None),
            limit=10,
            batch_size=4,
            shard_rows=6,
            progress=False,
        )
    )
    assert "0 computed now" in again


def test_samples_are_read_by_the_fid_loader(weights, tmp_path):
    line = sample_bigan(weights, 12, 3, tmp_path / "samples", batch_size=5)
    assert "12 images" in line
    source = samples_source(tmp_path / "samples", "all")
    assert len(source) == 12 and source.load(0).size == (32, 32)
    with np.load(tmp_path / "samples" / "samples_12x32x32x1.npz") as f:
        arr = f["arr_0"]
    assert arr.dtype == np.uint8 and np.array_equal(np.asarray(source.load(7)), arr[7, ..., 0])
    sample_bigan(weights, 20, 3, tmp_path / "more", batch_size=7)  # image i depends on (seed, i) alone
    with np.load(tmp_path / "more" / "samples_20x32x32x1.npz") as f:
        assert np.array_equal(f["arr_0"][:12], arr)
    with pytest.raises(ValueError, match="other arguments"):
        sample_bigan(weights, 12, 4, tmp_path / "samples")


@pytest.mark.slow
def test_fid_runs_on_bigan_samples(weights, tmp_path):
    from analysis.fid import DataSpec, FidConfig, fid

    sample_bigan(weights, 16, 0, tmp_path / "samples")
    clf = "extract/weights/fmnist-classifier.pt"
    result = fid(
        FidConfig(
            fake=tmp_path / "samples",
            data=DataSpec("fashion-mnist", split="test"),
            features=f"classifier:{clf}",
            k=2,
            kid_subset_size=8,
            kid_subsets=2,
            cache=tmp_path / "cache",
        )
    )
    assert result.n_fake == 16 and np.isfinite(result.fd)
    # the generation table reads the BiGAN's samples as it reads the diffusion model's: a weights label, not a
    # record
    import json

    from analysis.gentable import generation_rows

    (tmp_path / "fd.json").write_text(json.dumps(result.to_dict()))
    row = generation_rows([("BiGAN", tmp_path / "fd.json")])[0]
    assert (
        row["model"] == "bigan"
        and row["weights"].startswith(f"{weights.name}@")
        and len(row["weights"].split("@")[1]) == 12
    )
    assert row["sampler"] == "generator" and row["steps"] == 1 and row["samples"] == 16


def test_bad_weights_are_one_clear_line(tmp_path, fmnist_env):
    runner = CliRunner()
    r = runner.invoke(
        cli, ["bigan-features", "--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "s.zarr")]
    )
    assert r.exit_code != 0 and "not found" in r.output and "Traceback" not in r.output
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not BiGAN weights"):
        load_bigan(tmp_path / "foreign.pt")
    r = runner.invoke(
        cli,
        ["bigan-sample", "--weights", str(tmp_path / "foreign.pt"), "--n", "2", "--out", str(tmp_path / "x")],
    )
    assert r.exit_code != 0 and "not BiGAN weights" in r.output and len(r.output.strip().splitlines()) == 1
    other = BiGAN(BiganArch(z_dim=8, width=8)).state_dict()
    other["encoder.head.1.bias"] = torch.zeros(3)
    torch.save(other, tmp_path / "bent.pt")
    with pytest.raises(CheckpointError, match="does not fit the BiGAN"):
        load_bigan(tmp_path / "bent.pt")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "train_state.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match="not a loadable training checkpoint"):
        train(config(tmp_path / "torn"))
