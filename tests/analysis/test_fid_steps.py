"""FID's feature steps in-process: the command lines it hands `extract features` are ones that
command's own parser reads back to the same settings (the runs themselves are tested in
test_fid.py, in child processes)."""

from __future__ import annotations

from pathlib import Path

from analysis.fid import DataSpec, FidConfig, _data_args, _feature_args
from extract.cli_stores import features


def test_the_feature_steps_arguments_parse_to_the_config_they_came_from(tmp_path):
    cfg = FidConfig(features="pixels", batch_size=7, seed=3, random_init=True, progress=False)
    spec = DataSpec("fashion-mnist", split="test", data_root=tmp_path, data_opts=("a=b",), limit=11)
    argv = [*_feature_args(cfg), *_data_args(spec), "--out", str(tmp_path / "f.zarr")]
    params = features.make_context("features", argv).params
    assert (params["features"], params["batch_size"], params["seed"]) == ("pixels", 7, 3)
    assert params["random_init"] is True and params["progress"] is False
    assert (params["data"], params["split"], params["limit"]) == ("fashion-mnist", "test", 11)
    assert Path(params["data_root"]) == tmp_path.resolve() and tuple(params["data_opts"]) == ("a=b",)
