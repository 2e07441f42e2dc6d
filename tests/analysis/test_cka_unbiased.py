"""Unbiased CKA (Song et al.'s HSIC in CKA's ratio): every exact linear path and the rbf kernel
against the dense definition, and what it corrects: biased CKA's inflation where d >> n."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.cka import hsic_unbiased_centred, rbf_gram
from analysis.cka_config import CkaConfig
from analysis.cli import main
from analysis.compare import cka_map
from extract.store.schema import FeatureKey
from tests.analysis.test_align import ref_hsic_unbiased
from tests.analysis.test_cka import _wide_stores
from tests.probe.stores import make_store


def ref_unbiased_cka(kx, ky):
    return ref_hsic_unbiased(kx, ky) / np.sqrt(ref_hsic_unbiased(kx, kx) * ref_hsic_unbiased(ky, ky))


def test_the_centred_form_equals_the_definition_whatever_the_rows_mean():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 7)) + 4.0, rng.normal(size=(30, 5)) - 1.0
    xc, yc = x - x.mean(0), y - y.mean(0)
    g = float(np.vdot(xc @ xc.T, yc @ yc.T))
    value = hsic_unbiased_centred(g, (xc * xc).sum(1), (yc * yc).sum(1))
    assert value == pytest.approx(ref_hsic_unbiased(x @ x.T, y @ y.T), rel=1e-9)  # uncentred rows
    with pytest.raises(ValueError, match="at least 4"):
        hsic_unbiased_centred(g, np.ones(3), np.ones(3))


def _map(a, b=None, **options):
    return cka_map(CkaConfig(a, b, progress=False, **options))


@pytest.mark.parametrize("views", [1, 3])
def test_every_linear_path_gives_the_unbiased_definition(tmp_path, views):
    a, b, valid = _wide_stores(tmp_path, views=views)
    maps = {
        p: _map(
            tmp_path / "wa.zarr", tmp_path / "wb.zarr", linear_path=p, block_rows=10, estimator="unbiased"
        )
        for p in ("moments", "gram", "pairwise", "tiles")
    }
    ka, kb = sorted(a, key=FeatureKey.sort_key), sorted(b, key=FeatureKey.sort_key)
    first = (lambda x: x[:, 0]) if views > 1 else (lambda x: x)
    rows = {k: first(a[k])[valid].reshape(valid.sum(), -1).astype(np.float64) for k in ka}
    cols = {k: first(b[k])[valid].reshape(valid.sum(), -1).astype(np.float64) for k in kb}
    ref = np.array([[ref_unbiased_cka(rows[i] @ rows[i].T, cols[j] @ cols[j].T) for j in kb] for i in ka])
    for path, m in maps.items():
        assert m.estimator == "unbiased" and m.method == path
        np.testing.assert_allclose(m.matrix, ref, rtol=0, atol=1e-7, err_msg=path)
    biased = _map(tmp_path / "wa.zarr", tmp_path / "wb.zarr").matrix
    assert np.all(np.abs(biased - ref) > 1e-3)  # a different estimator, not the same number relabelled


def _independent_wide(tmp_path, n=40, d=4096):
    rng = np.random.default_rng(5)
    key = FeatureKey(0, 1, None)
    y = np.arange(n) % 2
    for name in ("x", "z"):
        make_store(tmp_path / f"{name}.zarr", {key: rng.normal(size=(n, d, 1, 1)).astype(np.float16)}, y)


def test_unbiased_cka_removes_the_inflation_of_wide_independent_features(tmp_path):
    """Independent features share nothing; with d = 4096 >> n = 40 the biased estimator says
    otherwise, the unbiased one does not."""
    _independent_wide(tmp_path)
    biased = _map(tmp_path / "x.zarr", tmp_path / "z.zarr").matrix[0, 0]
    unbiased = _map(tmp_path / "x.zarr", tmp_path / "z.zarr", estimator="unbiased").matrix[0, 0]
    assert biased > 0.5 and abs(unbiased) < 0.05


def test_rbf_unbiased_equals_the_definition(tmp_path):
    a, b, valid = _wide_stores(tmp_path)
    m = _map(tmp_path / "wa.zarr", tmp_path / "wb.zarr", kernel="rbf", estimator="unbiased")
    ka, kb = sorted(a, key=FeatureKey.sort_key), sorted(b, key=FeatureKey.sort_key)
    kx = rbf_gram(a[ka[0]][valid].reshape(valid.sum(), -1).astype(np.float64))
    ky = rbf_gram(b[kb[1]][valid].reshape(valid.sum(), -1).astype(np.float64))
    assert m.matrix[0, 1] == pytest.approx(ref_unbiased_cka(kx, ky), abs=1e-9)


def test_the_command_records_its_estimator_and_refuses_a_biased_minibatch(tmp_path, capsys):
    _independent_wide(tmp_path, d=64)
    out = tmp_path / "map.png"
    args = [
        "cka",
        "--store",
        str(tmp_path / "x.zarr"),
        "--store",
        str(tmp_path / "z.zarr"),
        "--out",
        str(out),
    ]
    with pytest.raises(SystemExit) as done:
        main([*args, "--estimator", "unbiased", "--no-progress"])
    assert done.value.code in (0, None)
    assert json.loads(out.with_suffix(".json").read_text())["estimator"] == "unbiased"
    assert "(unbiased)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main([*args, "--kernel", "minibatch", "--estimator", "biased", "--no-progress"])
    err = capsys.readouterr().err
    assert done.value.code != 0 and "no biased estimator" in err and "Traceback" not in err
