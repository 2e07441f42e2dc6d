"""Standard backbones written in the feature schema: values equal a plain torchvision forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from analysis.cka_config import CkaConfig
from analysis.compare import cka_map
from extract.data.sources import fashion_mnist, preprocess
from extract.models.backbones import MEAN, STD, BackboneConfig, as_map, extract_backbone
from extract.store.config import from_flat
from extract.store.schema import FeatureKey, FeatureStore
from tests.conftest import run_tiny


@pytest.mark.slow
def test_resnet50_stage_features_equal_a_plain_forward(tmp_path, fmnist_env):
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "rn50.pt")
    out = tmp_path / "rn.zarr"
    extract_backbone(
        from_flat(
            BackboneConfig,
            out=out,
            weights=tmp_path / "rn50.pt",
            blocks=(2,),
            pools=(1, 2),
            limit=6,
            batch_size=4,
            progress=False,
        )
    )
    store = FeatureStore.open(out)
    assert store.complete and store.attrs["key"]["weights"]["checkpoint"] == "rn50.pt"
    source = fashion_mnist(None, "test")
    x = torch.stack([preprocess(source.load(int(i)), 224, 3) for i in store.index()])
    x = ((x + 1) / 2 - MEAN) / STD
    with torch.inference_mode():
        h = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        h = reference.layer2(reference.layer1(h))
    expected = torch.nn.functional.adaptive_avg_pool2d(h, 2).half().float()
    got = torch.from_numpy(store.array(FeatureKey(0, 2, 2))[:].astype(np.float32))
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-3)
    assert store.array(FeatureKey(0, 2, 1)).shape == (6, 512, 1, 1)


def test_vit_tokens_become_a_square_map_without_the_class_token():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # CLS + 2x2 patches, 3 channels
    m = as_map(tokens)
    assert m.shape == (2, 3, 2, 2) and torch.equal(m[0, :, 0, 1], tokens[0, 2])


def test_backbone_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="exactly one of --weights FILE and --random-init"):
        extract_backbone(from_flat(BackboneConfig, out=tmp_path / "x.zarr"))
    with pytest.raises(ValueError, match=r"block 5 is outside 1..4"):
        extract_backbone(from_flat(BackboneConfig, out=tmp_path / "x.zarr", random_init=True, blocks=(5,)))


@pytest.mark.slow
def test_cka_between_a_unet_and_a_backbone_on_the_same_images(tmp_path, fmnist_env):
    run_tiny(tmp_path / "u.zarr", split="test", limit=12, ts=(10,), blocks=(7,), pools=(2,))
    extract_backbone(
        from_flat(
            BackboneConfig, out=tmp_path / "r.zarr", random_init=True, blocks=(1,), limit=12, progress=False
        )
    )
    m = cka_map(CkaConfig(tmp_path / "u.zarr", tmp_path / "r.zarr", ("unet", "resnet50"), progress=False))
    assert m.matrix.shape == (1, 1) and 0 < m.matrix[0, 0] <= 1 and m.n == 12


@pytest.mark.slow
def test_run_accepts_a_torchvision_model_with_weights(tmp_path, fmnist_env):
    from click.testing import CliRunner

    from extract.cli import cli

    torch.manual_seed(2)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "w.pt")
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            "torchvision:resnet50",
            "--weights",
            str(tmp_path / "w.pt"),
            "--split",
            "test",
            "--limit",
            "4",
            "-b",
            "1",
            "--pool",
            "1",
            "--out",
            str(tmp_path / "s.zarr"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert (
        store.complete
        and store.keys() == [FeatureKey(0, 1, 1)]
        and store.attrs["key"]["weights"]["checkpoint"] == "w.pt"
    )


def test_options_that_do_not_apply_to_a_backbone_are_named_not_dropped(tmp_path, fmnist_env):
    from click.testing import CliRunner

    from extract.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            "torchvision:resnet50",
            "--random-init",
            "-t",
            "50",
            "--views",
            "2",
            "--dtype",
            "bf16",
            "--out",
            str(tmp_path / "s.zarr"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--t, --views, --dtype: not options of torchvision:resnet50" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "s.zarr").exists()
