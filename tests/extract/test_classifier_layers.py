"""The classifier's layers as a store (the staged family, `classifier-layers`): rows equal a plain
forward of SmallCNN, the command end to end, one-line errors, repair and CKA against a U-Net store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from analysis.cka_config import CkaConfig
from analysis.compare import cka_map
from extract.cli import cli
from extract.data.sources import fashion_mnist, preprocess
from extract.models.classifier import SmallCNN
from extract.models.families import FAMILIES, family_of_kind
from extract.models.staged import NETWORKS, StagedConfig, extract_staged
from extract.models.weights import file_sha256
from extract.repair import repair_store
from extract.store.config import from_flat
from extract.store.schema import FeatureKey, FeatureStore
from extract.store.verify import verify_store
from tests.conftest import run_tiny


@pytest.fixture
def weights(tmp_path):
    """A SmallCNN with random weights and batch-norm statistics (so eval mode is not the identity)."""
    torch.manual_seed(3)
    model = SmallCNN()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path / "clf.pt"
    torch.save(model.state_dict(), path)
    return path


def _reference(path, x):
    """Each layer applied by hand in eval mode: no hooks of the family's."""
    model = SmallCNN()
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    out, h = [], x
    with torch.no_grad():
        for stage in model.body:
            h = stage(h)
            out.append(h)
        out.append(model.features(x)[:, :, None, None])
        out.append(model(x)[:, :, None, None])
    return out


def config(out, weights, **kw):
    base = dict(
        out=out,
        network="fmnist-classifier",
        weights=weights,
        split="test",
        pools=(1, None),
        limit=10,
        batch_size=4,
        shard_rows=6,
        progress=False,
    )
    return from_flat(StagedConfig, **{**base, **kw})


def test_store_rows_equal_a_plain_forward_of_the_classifier(weights, tmp_path, fmnist_env):
    out = tmp_path / "c.zarr"
    line = extract_staged(config(out, weights))
    assert "blocks [1, 2, 3, 4, 5]" in line and "10 images" in line
    store = FeatureStore.open(out)
    key, made = store.attrs["key"], store.attrs["provenance"]
    assert (
        store.complete
        and made["kind"] == "classifier-layers"
        and made["config"]["network"] == "fmnist-classifier"
    )
    assert key["model"]["name"] == "fmnist-classifier" and key["model"]["blocks"] == [
        "body.0",
        "body.1",
        "body.2",
        "embed",
        "head",
    ]
    assert key["weights"] == {
        "random_init": False,
        "checkpoint": "clf.pt",
        "sha256": file_sha256(weights),
    } and key["blocks"] == [1, 2, 3, 4, 5]
    # each block's layer by name, one per module of the network
    assert made["layers"] == {
        "1": "conv stage 1",
        "2": "conv stage 2",
        "3": "conv stage 3",
        "4": "embedding",
        "5": "logits",
    }
    assert family_of_kind("classifier-layers") is family_of_kind("bigan") is FAMILIES["staged"]
    assert set(FAMILIES["staged"].kinds) == {n.kind for n in NETWORKS.values()}
    source = fashion_mnist(None, "test")
    x = torch.stack([preprocess(source.load(int(i)), 32, 1) for i in store.index()])
    ref = _reference(weights, x)
    shapes = [(32, 16, 16), (64, 8, 8), (128, 4, 4), (128, 1, 1), (10, 1, 1)]
    for b in range(1, 6):
        full = torch.from_numpy(store.array(FeatureKey(0, b, None))[:].astype(np.float32))
        assert full.shape == (10, *shapes[b - 1])
        torch.testing.assert_close(full, ref[b - 1].half().float(), rtol=2e-3, atol=2e-3)
        pooled = torch.from_numpy(store.array(FeatureKey(0, b, 1))[:].astype(np.float32))
        torch.testing.assert_close(
            pooled, ref[b - 1].mean((2, 3), keepdim=True).half().float(), rtol=3e-3, atol=3e-3
        )
    assert ref[3].abs().sum() > 0 and ref[4].std() > 0  # the features and logits are not degenerate
    assert "0 computed now" in extract_staged(config(out, weights))


def test_a_corrupted_shard_is_repaired_with_the_recorded_network(weights, tmp_path, fmnist_env):
    out = tmp_path / "c.zarr"
    # 10 rows in shards of 6: the corrupted last shard is partial
    extract_staged(config(out, weights, blocks=(2,), pools=(1,)))
    before = FeatureStore.open(out).array(FeatureKey(0, 2, 1))[:]
    chunk = sorted(p for p in (out / FeatureKey(0, 2, 1).path / "c").rglob("*") if p.is_file())[1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert any("shard 1" in p for p in verify_store(out))
    assert repair_store(out) == []
    assert np.array_equal(FeatureStore.open(out).array(FeatureKey(0, 2, 1))[:], before)


def test_the_command_end_to_end_and_the_shipped_weights_by_default(weights, tmp_path, fmnist_env):
    runner = CliRunner()
    out = tmp_path / "cli.zarr"
    r = runner.invoke(
        cli,
        [
            "classifier-layers",
            "--weights",
            str(weights),
            "--split",
            "test",
            "--limit",
            "6",
            "-b",
            "2,4",
            "--pool",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    store = FeatureStore.open(out)
    assert (
        store.complete
        and store.keys() == [FeatureKey(0, 2, 1), FeatureKey(0, 4, 1)]
        and len(store.index()) == 6
    )
    r = runner.invoke(
        cli,
        [
            "classifier-layers",
            "--split",
            "test",
            "--limit",
            "4",
            "-b",
            "5",
            "--pool",
            "full",
            "--out",
            str(tmp_path / "shipped.zarr"),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    shipped = FeatureStore.open(tmp_path / "shipped.zarr")
    assert shipped.attrs["key"]["weights"]["checkpoint"] == "fmnist-classifier.pt"
    assert shipped.array(FeatureKey(0, 5, None)).shape == (4, 10, 1, 1)
    assert "classifier-layers" in runner.invoke(cli, ["--help"]).output
    # --skip-small-maps leaves out the pairs whose pool exceeds the map (the 1x1 embedding at pool 4),
    # recorded in the key
    r = runner.invoke(
        cli,
        [
            "classifier-layers",
            "--weights",
            str(weights),
            "--split",
            "test",
            "--limit",
            "6",
            "-b",
            "3,4",
            "--pool",
            "1,4,full",
            "--skip-small-maps",
            "--out",
            str(tmp_path / "skip.zarr"),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    skipped = FeatureStore.open(tmp_path / "skip.zarr")
    assert set(skipped.keys()) == {
        FeatureKey(0, 3, 1),
        FeatureKey(0, 3, 4),
        FeatureKey(0, 3, None),
        FeatureKey(0, 4, 1),
        FeatureKey(0, 4, None),
    }
    assert skipped.attrs["key"]["skip_small_maps"] is True and "skip_small_maps" not in store.attrs["key"]
    assert skipped.array(FeatureKey(0, 3, 4)).shape == (6, 128, 4, 4)
    assert skipped.array(FeatureKey(0, 4, None)).shape == (6, 128, 1, 1)


def test_bad_input_is_one_line_and_exit_2(weights, tmp_path, fmnist_env):
    runner = CliRunner()
    state = SmallCNN().state_dict()
    state["head.weight"] = torch.zeros(3, 128)
    torch.save(state, tmp_path / "bent.pt")
    for args, message in [
        (["--weights", str(tmp_path / "bent.pt")], "is not a SmallCNN classifier state_dict"),
        (["--weights", str(tmp_path / "none.pt")], "not found"),
        (["--weights", str(weights), "-b", "6"], "block 6 is outside 1..5 for the Fashion-MNIST classifier"),
        (
            ["--weights", str(weights), "-b", "3,4", "--pool", "4"],
            "block 4: pool 4 is larger than the block's 1x1 map (--skip-small-maps",
        ),
        (
            ["--weights", str(weights), "-b", "4,5", "--pool", "2", "--skip-small-maps"],
            "every chosen (block, pool) pair has a pool larger",
        ),
    ]:
        r = runner.invoke(
            cli,
            [
                "classifier-layers",
                *args,
                "--split",
                "test",
                "--limit",
                "2",
                "--out",
                str(tmp_path / "x.zarr"),
                "--no-progress",
            ],
        )
        assert (
            r.exit_code == 2
            and message in r.output
            and len(r.output.strip().splitlines()) == 1
            and "Traceback" not in r.output
        ), r.output
    with pytest.raises(ValueError, match="unknown staged network 'nope'"):
        extract_staged(config(tmp_path / "y.zarr", weights, network="nope"))
    with pytest.raises(ValueError, match="give --weights FILE"):
        extract_staged(config(tmp_path / "y.zarr", None, network="bigan-encoder"))


def test_cka_between_the_demo_unet_and_every_classifier_layer(weights, tmp_path, fmnist_env):
    run_tiny(tmp_path / "u.zarr", split="test", limit=12, ts=(10,), blocks=(3, 7), pools=(1,))
    extract_staged(config(tmp_path / "c.zarr", weights, limit=12, pools=(1,)))
    m = cka_map(CkaConfig(tmp_path / "u.zarr", tmp_path / "c.zarr", ("unet", "classifier"), progress=False))
    assert m.matrix.shape == (2, 5) and m.n == 12 and np.all((m.matrix > 0) & (m.matrix <= 1 + 1e-9))
