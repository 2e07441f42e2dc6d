"""The Inception Score and the kernel distance (KID), checked against torch-fidelity's own
functions: on the same feature rows, and end to end on the same images through `analysis fid`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.gen_metrics import inception_score, kernel_distance


def test_the_inception_score_equals_torch_fidelitys():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = np.random.default_rng(0).normal(0, 3, size=(103, 1008))
    ours = inception_score(logits)
    theirs = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    assert ours[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(theirs["inception_score_std"], rel=1e-8)
    # one flat prediction for every image: no information
    assert inception_score(np.zeros((20, 5)))[0] == pytest.approx(1.0)
    confident = np.full((40, 4), -50.0)
    confident[np.arange(40), np.arange(40) % 4] = 50.0
    # sure and balanced over 4 classes: 4
    assert inception_score(confident, splits=2, shuffle=False)[0] == pytest.approx(4.0, rel=1e-6)


def test_the_kernel_distance_equals_torch_fidelitys():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 64)), rng.normal(0.3, 1.0, size=(250, 64))
    ours = kernel_distance(a, b, subsets=7, subset_size=100)
    theirs = kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=7, kid_subset_size=100, verbose=False
    )
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-8)
    same = kernel_distance(a, a.copy(), subsets=20, subset_size=100)
    # unbiased: about zero for one distribution, far from it for a shifted one
    assert abs(same[0]) < 0.2 * ours[0]
    with pytest.raises(ValueError, match="subsets of 1000 rows"):
        kernel_distance(a, b)


@pytest.mark.slow
def test_analysis_fid_reports_the_scores_torch_fidelity_gives_on_the_same_images(
    in_process_features, tmp_path, capfd
):
    """End to end: the same images and the same (random-weight) Inception, through our stores and
    through torch_fidelity.calculate_metrics."""
    import torch_fidelity

    from analysis.cli import main
    from extract.models.feature_nets import inception_network

    torch.manual_seed(0)
    torch.save(inception_network(None).state_dict(), tmp_path / "inception.pth")
    rng = np.random.default_rng(0)
    fake, real = (rng.integers(0, 256, size=(n, 24, 24, 3)).astype(np.uint8) for n in (10, 10))
    np.savez(tmp_path / "fake.npz", arr_0=fake)
    np.savez(tmp_path / "real.npz", arr_0=real)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "fid",
                "--no-progress",
                "--fake",
                str(tmp_path / "fake.npz"),
                "--real",
                str(tmp_path / "real.npz"),
                "--inception-weights",
                str(tmp_path / "inception.pth"),
                "--kid-subsets",
                "5",
                "--kid-subset-size",
                "10",
                "--cache",
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
    assert done.value.code == 0, capfd.readouterr().err
    ours = json.loads((tmp_path / "r.json").read_text())

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    theirs = torch_fidelity.calculate_metrics(
        input1=Images(fake),
        input2=Images(real),
        isc=True,
        kid=True,
        kid_subsets=5,
        kid_subset_size=10,
        save_cpu_ram=True,
        feature_extractor_weights_path=str(tmp_path / "inception.pth"),
        cache=False,
        verbose=False,
        batch_size=8,
        cuda=False,
    )
    assert ours["inception_score"][0] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
    assert ours["kid"][0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)
    assert ours["kid_subset_size"] == 10 and ours["kid_metric"] == "KD (Inception-v3, non-standard weights)"
