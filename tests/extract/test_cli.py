import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from extract.cli import cli
from extract.data.sources import fashion_mnist, preprocess
from extract.models.adm import build_unet
from extract.models.adm_presets import PRESETS
from extract.models.noise import draw_noise, q_sample
from extract.store.schema import FeatureKey, FeatureStore


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, fragment):
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text and fragment in text, text
    assert len(text.splitlines()) == 1, text


def test_blocks_command_prints_the_adm256_table():
    result = invoke("blocks", "--model", "adm256-uncond")
    assert result.exit_code == 0
    line24 = next(line for line in result.output.splitlines() if line.split()[:1] == ["24"])
    assert line24.split()[1:2] == ["output_blocks.4"] and "1024" in line24 and "16x16" in line24


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["-t", "1000"], "timestep 1000 is outside [0, 1000)"),
        (["-b", "0"], "block 0 is outside 1..13"),
        (["--pool", "64"], "block 12: pool 64 is larger than the block's 32x32 map"),
        (["--no-random-init"], "no --ckpt given"),
        (
            ["--no-random-init", "--ckpt", "/nonexistent/model.pt"],
            "checkpoint not found: /nonexistent/model.pt",
        ),
        (["--data", "imagefolder", "--data-root", "/nonexistent/imagenet"], "image folder not found"),
        (["--shard-rows", "10"], "must be a multiple of --micro-batch"),
    ],
)
def test_bad_options_are_one_line(tmp_path, fmnist_env, args, fragment):
    result = invoke(
        "run", "--model", "tiny", "--random-init", "--out", str(tmp_path / "s.zarr"), "--no-progress", *args
    )
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "s.zarr").exists()


def test_unknown_preset_is_refused_by_click(tmp_path):
    result = invoke("run", "--model", "adm1024", "--random-init", "--out", str(tmp_path / "s.zarr"))
    assert result.exit_code == 2 and "adm256-uncond" in result.output and "Traceback" not in result.output


def test_checkpoint_that_does_not_fit_is_refused_before_any_work(tmp_path, fmnist_env):
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_unet(PRESETS["tiny"]).state_dict(), ckpt)
    result = invoke(
        "run",
        "--model",
        "adm256-uncond",
        "--ckpt",
        str(ckpt),
        "--out",
        str(tmp_path / "s.zarr"),
        "-b",
        "1",
        "--pool",
        "1",
    )
    assert_one_line_error(result, "does not fit preset 'adm256-uncond'")
    assert "missing keys" in result.output and "presets that fit this file: tiny" in result.output
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.slow
def test_a_published_format_adm256_checkpoint_loads_through_ckpt(tmp_path, fmnist_env):
    """The real architecture with random weights, saved as a plain state_dict like
    256x256_diffusion_uncond.pt, extracted through the CLI (b=1: one conv, so it is quick)."""
    ckpt = tmp_path / "256x256_diffusion_uncond.pt"
    torch.manual_seed(0)
    model = build_unet(PRESETS["adm256-uncond"])
    conv = model.input_blocks[0][0]
    weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
    torch.save(model.state_dict(), ckpt)
    del model
    out = tmp_path / "s.zarr"
    cmd = [
        sys.executable,
        "-m",
        "extract",
        "run",
        "--model",
        "adm256-uncond",
        "--ckpt",
        str(ckpt),
        "--split",
        "test",
        "-t",
        "0",
        "-b",
        "1",
        "--pool",
        "1",
        "--limit",
        "2",
        "--micro-batch",
        "2",
        "--store-dtype",
        "float32",
        "--out",
        str(out),
        "--no-progress",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    store = FeatureStore.open(out)
    assert store.attrs["provenance"]["weights"]["checkpoint"] == ckpt.name
    assert len(store.attrs["key"]["weights"]["sha256"]) == 64
    feats = store.array(FeatureKey(0, 1, 1))[:]
    assert feats.shape == (2, 256, 1, 1)
    # block 1 is the stem conv: recompute it from the saved weights with plain torch
    source = fashion_mnist(None, "test")
    rows = [int(i) for i in store.index()]
    x0 = torch.stack([preprocess(source.load(i), 256, 3) for i in rows])
    x_t = q_sample(PRESETS["adm256-uncond"], x0, 0, draw_noise((3, 256, 256), 0, rows, 0, 0))
    expected = torch.nn.functional.conv2d(x_t, weight, bias, padding=1).mean(dim=(2, 3))
    assert torch.allclose(torch.from_numpy(feats[:, :, 0, 0]), expected, atol=1e-5)


def test_pixel_store_holds_the_preprocessed_images_and_probes(tmp_path, fmnist_env):
    for split in ("train", "test"):
        result = invoke("pixels", "--split", split, "--out", str(tmp_path / f"{split}.zarr"), "--no-progress")
        assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "test.zarr")
    assert (
        store.complete
        and store.keys() == [FeatureKey(0, 0, None)]
        and store.attrs["key"]["model"]["name"] == "pixels"
    )
    source = fashion_mnist(None, "test")
    expected = torch.stack([preprocess(source.load(i), 28, 1) for i in range(len(source))]).half()
    assert torch.equal(torch.from_numpy(store.array(FeatureKey(0, 0, None))[:]), expected)
    again = invoke("pixels", "--split", "test", "--out", str(tmp_path / "test.zarr"), "--no-progress")
    # the one writer resumes: nothing to redo
    assert again.exit_code == 0 and "(0 computed now)" in again.output
    other = invoke(
        "pixels", "--split", "test", "--limit", "5", "--out", str(tmp_path / "test.zarr"), "--no-progress"
    )
    assert_one_line_error(other, "made with other arguments")
    from probe.run import ProbeConfig, probe

    result = probe(
        ProbeConfig(
            train=tmp_path / "train.zarr",
            test=tmp_path / "test.zarr",
            heads=("logreg",),
            results=tmp_path / "r",
            progress=False,
        )
    )
    assert result["test"]["top1"] >= 90  # each synthetic class is a distinct bright bar


def test_bench_io_reads_the_same_rows_both_ways(tmp_path):
    from extract.bench.io import bench_io, format_table
    from tests.probe.stores import make_store

    key = FeatureKey(10, 9, None)
    make_store(
        tmp_path / "real.zarr",
        {key: np.random.default_rng(0).normal(size=(100, 4, 4, 4)).astype(np.float16)},
        np.arange(100) % 3,
        shard_rows=32,
    )
    result = bench_io(rows=300, dim=16, shard_rows=64, repeats=1, store=tmp_path / "real.zarr")
    synthetic, real = result[
        "parts"
    ]  # every reader's values were checked against the rows written (inside bench_data)
    assert synthetic["rows"] == 300 and real["rows"] == 100 and real["data"] == f"real.zarr {key}"
    readers = {(r["codec"], r["reader"]) for r in synthetic["results"]}
    assert ("crc32c (diffprobe's)", "diffprobe shard reader") in readers and (
        "zstd-1 + crc32c",
        "zarr-python",
    ) in readers
    # it reads one layout only
    assert not any(r == "diffprobe shard reader" for c, r in readers if c != "crc32c (diffprobe's)")
    assert all(r["mb_per_s"] > 0 and r["size_ratio"] > 0 for r in synthetic["results"] + real["results"])
    assert "of raw" in format_table(result)


@pytest.mark.parametrize(
    "args",
    [
        [
            "run",
            "--model",
            "tiny",
            "--random-init",
            "-t",
            "10",
            "-b",
            "3",
            "--pool",
            "1",
            "--limit",
            "4",
            "--micro-batch",
            "4",
        ],
        ["pixels", "--limit", "4"],
        ["backbone", "--random-init", "-b", "1", "--pool", "1", "--limit", "2", "--split", "train"],
    ],
    ids=["run", "pixels", "backbone"],
)
def test_a_store_in_folders_that_do_not_exist_yet_is_made(tmp_path, fmnist_env, args):
    """What a fresh clone does: `make extract` writes into cache/, which is not there yet."""
    out = tmp_path / "new" / "deeper" / "s.zarr"
    result = invoke(*args, "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert FeatureStore.open(out).complete
    assert not out.with_name("s.zarr.lock").exists()


def test_presets_lists_every_way_to_name_a_model():
    result = invoke("presets")
    assert result.exit_code == 0, result.output
    first = {line.split()[0] for line in result.output.splitlines()}
    assert {
        "adm256-uncond",
        "demo-fmnist",
        "sd15",
        "dit-xl-2-256",
        "sdxl",
        "diffusers",
        "--model-flags",
    } <= first


def _flags(help_text: str) -> set[str]:
    """The options a --help lists (the words that begin its option lines)."""
    out = set()
    for line in help_text.splitlines():
        if line.startswith("  -"):
            for word in line.split():
                if not word.startswith("-"):
                    break
                out.update(w for w in word.rstrip(",").split("/") if w)
    return out


def test_run_help_shows_the_shared_options_and_the_named_familys_only():
    shared = invoke("run", "--help")
    assert shared.exit_code == 0 and "run --model NAME --help" in shared.output.replace("`", "")
    assert {"--out", "-t", "--pool", "--micro-batch", "--ckpt", "--plan"} <= _flags(shared.output)
    own = {"--model-flags", "--class-label", "--prompt", "--model-dir", "--latents", "--cond"}
    assert not own & _flags(shared.output)
    expected = {
        "tiny": {"--model-flags", "--class-label"},
        "tiny-sd": {"--prompt", "--model-dir", "--latents", "--class-label"},
        "diffusers": {"--model-dir", "--prompt", "--cond", "--latents", "--class-label"},
    }
    for model, options in expected.items():
        result = invoke("run", "--model", model, "--help")
        assert result.exit_code == 0, result.output
        assert own & _flags(result.output) == options, model
        assert {"--out", "-t", "--micro-batch", "--plan"} <= _flags(result.output), model
    backbone = _flags(invoke("run", "--model", "torchvision:resnet50", "--help").output)
    assert {"--weights", "--ckpt", "--out", "--micro-batch", "--pool"} <= backbone
    assert not ({"-t", "--views", "--dtype", "--plan", "--aug"} | own) & backbone  # no noise, no t


def test_another_familys_option_is_named_in_one_line(tmp_path):
    out = str(tmp_path / "s.zarr")
    assert_one_line_error(
        invoke("run", "--model", "tiny", "--prompt", "a cat", "--out", out),
        "error: --prompt: not an option of tiny; leave them out",
    )
    assert_one_line_error(
        invoke("run", "--model", "tiny-sd", "--model-flags=--image_size 64", "--cond", "c", "--out", out),
        "error: --model-flags, --cond: not options of tiny-sd",
    )
    assert_one_line_error(
        invoke("blocks", "--model", "tiny", "--model-dir", "m"), "--model-dir: not an option"
    )
    # no form takes it: click says so
    unknown = invoke("run", "--model", "tiny", "--colour", "red", "--out", out)
    assert unknown.exit_code == 2 and "No such option '--colour'" in unknown.output
    assert not (tmp_path / "s.zarr").exists()


def test_each_default_is_the_configs():
    """The options are generated from the dataclasses, so the command line cannot drift from them;
    `run` over a backbone takes run's defaults where the backbone's config has the same option."""
    from extract.cli_run import run_params
    from extract.cli_stores import _backbone_params
    from extract.models.backbone_options import BackboneConfig
    from extract.store.config import ExtractConfig

    def defaults(params):
        return {p.name: p.default for p in params}

    fields = ExtractConfig.__dataclass_fields__
    tiny = defaults(run_params(["--model", "tiny"]))
    assert (tiny["micro_batch"], tiny["batch_size"]) == (
        fields["micro_batch"].default,
        fields["batch_size"].default,
    )
    assert (tiny["micro_batch"], tiny["batch_size"], tiny["ts"], tiny["pools"]) == (16, 64, ("150",), ("2",))
    backbone = defaults(_backbone_params([]))
    assert (backbone["batch_size"], backbone["split"]) == (
        BackboneConfig.__dataclass_fields__["batch_size"].default,
        "test",
    )
    in_run = defaults(run_params(["--model", "torchvision:vit_b_16"]))
    assert (in_run["batch_size"], in_run["split"], in_run["model"]) == (64, "train", "torchvision:vit_b_16")
