"""Latent diffusion presets (SD U-Nets, DiT) on tiny random models: block tables against hooks,
early exit, the latent cache, determinism, refusals, and the CLI's one-line errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from extract.cli import cli
from extract.data.sources import FeatureInput
from extract.models.latent import (
    FAMILIES,
    CheckpointError,
    build_denoiser,
    build_text_encoder,
    encode_latents,
    encode_prompt,
    libraries,
    load_latent_model,
)
from extract.models.latent_blocks import capture_latent, latent_block_table, latent_blocks, meta_inputs
from extract.models.latent_presets import LATENT_PRESETS
from extract.models.latent_run import LATENT_KEY
from extract.models.noise import alphas_cumprod, draw_noise, latent_q_sample
from extract.models.pooling import pool
from extract.run import extract
from extract.store.config import ExtractConfig, from_flat
from extract.store.schema import FeatureKey, FeatureStore
from tests.extract.latent_fixtures import write_model_folder
from tests.extract.test_cli import assert_one_line_error, invoke

TINY = ("tiny-sd", "tiny-dit")
BLOCK_RE = re.compile(
    r"^(down_blocks|up_blocks)\.\d+(\.(resnets|attentions)\.\d+)?$"
    r"|^mid_block(\.(resnets|attentions)\.\d+)?$|^transformer_blocks\.\d+$"
)


def config(out: Path, model: str, **overrides) -> ExtractConfig:
    base = dict(
        out=out,
        model=model,
        random_init=True,
        data="fashion-mnist",
        split="train",
        ts=(10, 300),
        blocks=(2, 3),
        pools=(1, None),
        limit=6,
        shard_rows=4,
        micro_batch=2,
        batch_size=4,
        store_dtype="float32",
        progress=False,
    )
    base.update(overrides)
    return from_flat(ExtractConfig, **base)


def inputs(preset, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, t, cond = meta_inputs(preset, n, "cpu")
    x = torch.randn(x.shape, generator=g)
    cond = torch.randn(cond.shape, generator=g) if cond.is_floating_point() else cond
    return x, torch.tensor([10, 700][:n]), cond


@pytest.mark.parametrize("name", ["sd21", "sd15", "dit-xl-2-256", *TINY])
def test_the_block_numbering_is_the_order_in_which_hooks_fire(name):
    """Every down/mid/up block, resnet and attention (SD) or transformer block (DiT), in forward order."""
    preset = LATENT_PRESETS[name]
    model = build_denoiser(preset, "meta")
    fired = []
    for module_name, module in model.named_modules():
        if BLOCK_RE.match(module_name):
            module.register_forward_hook(lambda m, i, o, n=module_name: fired.append(n))
    FAMILIES[preset.family].call(model, *meta_inputs(preset))
    assert tuple(fired) == preset.block_names
    assert preset.block_names[preset.default_block - 1] == preset.default_block_name


def test_published_block_tables():
    sd21 = {r.b: r for r in latent_block_table(LATENT_PRESETS["sd21"])}
    # DIFT's up_ft_index=1
    assert (
        len(sd21) == 47
        and sd21[33].module == "up_blocks.1"
        and (sd21[33].channels, sd21[33].height) == (1280, 48)
    )
    dit = latent_block_table(LATENT_PRESETS["dit-xl-2-256"])
    assert len(dit) == 28 and {(r.channels, r.height, r.width) for r in dit} == {(1152, 16, 16)}


@pytest.mark.parametrize("name", TINY)
def test_the_meta_table_matches_a_real_forward_and_early_exit_equals_the_full_forward(name):
    preset = LATENT_PRESETS[name]
    torch.manual_seed(0)
    model = build_denoiser(preset)
    x, t, cond = inputs(preset)
    table = latent_block_table(preset)
    with torch.inference_mode():
        full = capture_latent(model, preset, x, t, cond, [r.b for r in table], stop_early=False)
        assert [tuple(full[r.b].shape[1:]) for r in table] == [(r.channels, r.height, r.width) for r in table]
        last = latent_blocks(model, preset)[preset.num_blocks][1]
        ran_last = []
        last.register_forward_hook(lambda *a: ran_last.append(1))
        early = capture_latent(model, preset, x, t, cond, [1, 3], stop_early=True)
    assert not ran_last  # the forward stopped after block 3
    for b in (1, 3):
        assert torch.equal(early[b], full[b])


def test_dit_tokens_become_maps_in_patch_order():
    """Reference: run DiT's embedding and first blocks by hand, lay the tokens out row-major."""
    preset = LATENT_PRESETS["tiny-dit"]
    torch.manual_seed(0)
    model = build_denoiser(preset)
    x, t, labels = inputs(preset)
    with torch.inference_mode():
        h = model.pos_embed(x)
        for block in model.transformer_blocks[:2]:
            h = block(h, timestep=t, class_labels=labels)
        got = capture_latent(model, preset, x, t, labels, [2])[2]
    side = preset.latent_size // preset.denoiser["patch_size"]
    columns = [h[:, i * side + j] for i in range(side) for j in range(side)]
    expected = torch.stack(columns, dim=-1).reshape(2, -1, side, side)
    assert torch.equal(got, expected)


def test_noise_schedules_equal_diffusers_schedulers():
    ddpm = libraries().diffusers.DDPMScheduler
    z, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for schedule, start, end in (("scaled_linear", 0.00085, 0.012), ("linear", 0.0001, 0.02)):
        ref = ddpm(beta_schedule=schedule, beta_start=start, beta_end=end, num_train_timesteps=1000)
        abar = alphas_cumprod(schedule, start, end, 1000)
        assert torch.equal(abar, ref.alphas_cumprod)
        assert torch.equal(
            latent_q_sample(abar, z, 261, eps), ref.add_noise(z, eps, torch.tensor([261, 261]))
        )


def test_the_empty_prompt_without_a_tokenizer_is_what_clips_tokenizer_makes(tmp_path):
    preset = LATENT_PRESETS["tiny-sd"]
    folder = write_model_folder(preset, tmp_path / "m")
    tokenizer = libraries().transformers.CLIPTokenizer.from_pretrained(
        folder, subfolder="tokenizer", local_files_only=True
    )
    encoder = build_text_encoder(preset)
    assert torch.equal(encode_prompt(encoder, tokenizer, ""), encode_prompt(encoder, None, ""))


@pytest.mark.slow  # an end-to-end extraction (several runs)
@pytest.mark.parametrize("name", TINY)
def test_cached_latents_equal_fresh_encodes_and_later_runs_reuse_them(tmp_path, fmnist_env, name):
    preset = LATENT_PRESETS[name]
    first = extract(config(tmp_path / "a.zarr", name))
    assert "6 encoded now" in first.note
    latents = next((tmp_path / "latents").glob(f"{name}-*.zarr"))
    cached = FeatureStore.open(latents).array(LATENT_KEY)[:]
    # afresh: the same VAE (seeded random init), the same images, the same micro-batch shape
    model = load_latent_model(preset, random_init=True, seed=0)
    store = FeatureStore.open(tmp_path / "a.zarr")
    images = FeatureInput(_source(), preset.image_size, 3)
    x = torch.stack([images[int(i)][1] for i in store.index()])
    fresh = torch.cat([encode_latents(model.vae, x[i : i + 2]) for i in range(0, 6, 2)]).numpy()
    assert np.array_equal(cached, fresh)
    # a row of the store is the plain computation: diffusers' add_noise, the full forward, the pool
    ref = libraries().diffusers.DDPMScheduler(
        beta_schedule=preset.beta_schedule, beta_start=preset.beta_start, beta_end=preset.beta_end
    )
    rows = [int(i) for i in store.index()[:2]]
    x_t = ref.add_noise(
        torch.from_numpy(fresh[:2]), draw_noise(fresh.shape[1:], 0, rows, 300, 0), torch.tensor([300, 300])
    )
    with torch.inference_mode():
        maps = capture_latent(
            model.denoiser, preset, x_t, torch.tensor([300, 300]), model.batch_cond(2), [3], stop_early=False
        )
    np.testing.assert_allclose(
        store.array(FeatureKey(300, 3, 1))[:2], pool(maps[3], 1).numpy(), rtol=1e-5, atol=1e-5
    )
    # another t and b: nothing encoded, the features equal those from a fresh cache
    again = extract(config(tmp_path / "b.zarr", name, ts=(50,), blocks=(1,)))
    assert "0 encoded now" in again.note
    fresh_cache = extract(
        config(tmp_path / "c.zarr", name, ts=(50,), blocks=(1,), latents=tmp_path / "other.zarr")
    )
    assert "6 encoded now" in fresh_cache.note
    b, c = FeatureStore.open(tmp_path / "b.zarr"), FeatureStore.open(tmp_path / "c.zarr")
    assert np.array_equal(b.array(FeatureKey(50, 1, None))[:], c.array(FeatureKey(50, 1, None))[:])


def _source():
    from extract.data.sources import fashion_mnist

    return fashion_mnist(None, "train")


@pytest.mark.parametrize("name", TINY)
def test_features_and_latents_are_bit_identical_across_batch_sizes(tmp_path, fmnist_env, name):
    stores = []
    for batch in (2, 5):
        out = tmp_path / f"bs{batch}.zarr"
        extract(config(out, name, batch_size=batch, latents=tmp_path / f"latents{batch}.zarr", views=2))
        stores.append((FeatureStore.open(out), FeatureStore.open(tmp_path / f"latents{batch}.zarr")))
    (a, la), (b, lb) = stores
    assert np.array_equal(la.array(LATENT_KEY)[:], lb.array(LATENT_KEY)[:])
    for key in a.keys():
        assert np.array_equal(a.array(key)[:], b.array(key)[:]), key


def test_the_store_key_covers_conditioning_schedule_and_weights(tmp_path, fmnist_env):
    extract(config(tmp_path / "dit.zarr", "tiny-dit", class_label=7))
    key = FeatureStore.open(tmp_path / "dit.zarr").attrs["key"]
    assert key["conditioning"] == {"class_label": 7} and key["class_label"] == 7
    assert key["schedule"]["beta_schedule"] == "linear" and key["weights"]["denoiser"] == {
        "random_init": True,
        "init_seed": 0,
    }
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            "tiny-dit",
            "--random-init",
            "--out",
            str(tmp_path / "dit.zarr"),
            "--no-progress",
            "-b",
            "2,3",
            "-t",
            "10,300",
            "--pool",
            "1,full",
            "--limit",
            "6",
            "--shard-rows",
            "4",
            "--micro-batch",
            "2",
            "--store-dtype",
            "float32",
        ],
    )
    assert (
        result.exit_code != 0
        and "class_label" in result.output
        and "store has 7, asked 1000" in result.output
    )


def test_a_model_folder_loads_and_its_hashes_enter_the_key(tmp_path, fmnist_env):
    preset = LATENT_PRESETS["tiny-sd"]
    folder = write_model_folder(preset, tmp_path / "model", seed=3)
    summary = extract(config(tmp_path / "s.zarr", "tiny-sd", random_init=False, model_dir=folder))
    assert summary.images == 6
    weights = FeatureStore.open(tmp_path / "s.zarr").attrs["key"]["weights"]
    assert set(weights["denoiser"]) == {"unet/config.json", "unet/diffusion_pytorch_model.safetensors"}
    assert "text_encoder/model.safetensors" in weights["text_encoder"] and "vae/config.json" in weights["vae"]
    loaded = load_latent_model(preset, model_dir=folder)
    saved = libraries().diffusers.UNet2DConditionModel.from_pretrained(folder / "unet")
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in loaded.denoiser.state_dict().items())


def test_a_cleandift_style_unet_file_loads_and_a_wrong_one_is_refused_naming_keys(tmp_path):
    from safetensors.torch import save_file

    preset = LATENT_PRESETS["tiny-sd"]
    folder = write_model_folder(preset, tmp_path / "model")
    torch.manual_seed(5)
    unet = build_denoiser(preset)
    save_file(
        {f"unet.{k}": v.contiguous() for k, v in unet.state_dict().items()},
        tmp_path / "cleandift_unet.safetensors",
    )
    model = load_latent_model(preset, model_dir=folder, ckpt=tmp_path / "cleandift_unet.safetensors")
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in model.denoiser.state_dict().items())
    dit = build_denoiser(LATENT_PRESETS["tiny-dit"])
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, tmp_path / "dit.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"does not fit preset 'tiny-sd'.*missing keys: conv_in\.weight.*unexpected keys: pos_embed",
    ):
        load_latent_model(preset, model_dir=folder, ckpt=tmp_path / "dit.safetensors")


@pytest.mark.parametrize(
    "model,args,fragment",
    [
        ("tiny-sd", ["--no-random-init"], "tiny-sd needs --model-dir DIR"),
        (
            "tiny-sd",
            ["--no-random-init", "--model-dir", "/nonexistent/sd"],
            "model folder not found: /nonexistent/sd (expected a diffusers folder: DIR/unet/",
        ),
        ("tiny-dit", ["--class-label", "1001"], "--class-label must be in [0, 1000]"),
        ("tiny-sd", ["--class-label", "3"], "conditioned on a prompt"),
        ("tiny-sd", ["--prompt", "a photo"], "needs the tokenizer of a model folder"),
        ("tiny-dit", ["-b", "5"], "block 5 is outside 1..4"),
        ("tiny-dit", ["-t", "1000"], "timestep 1000 is outside [0, 1000)"),
        (
            "tiny-sd",
            ["--random-init", "--ckpt", "/nonexistent/unet.safetensors"],
            "--ckpt and --random-init exclude each other",
        ),
    ],
)
def test_latent_cli_errors_are_one_line(tmp_path, fmnist_env, model, args, fragment):
    result = invoke(
        "run",
        "--model",
        model,
        "--random-init",
        "--out",
        str(tmp_path / "s.zarr"),
        "--no-progress",
        "--limit",
        "4",
        *args,
    )
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "s.zarr").exists()


def test_a_folder_without_its_vae_says_what_layout_is_expected(tmp_path, fmnist_env):
    import shutil

    folder = write_model_folder(LATENT_PRESETS["tiny-dit"], tmp_path / "model")
    shutil.rmtree(folder / "vae")
    result = invoke(
        "run",
        "--model",
        "tiny-dit",
        "--model-dir",
        str(folder),
        "--out",
        str(tmp_path / "s.zarr"),
        "--no-progress",
    )
    assert_one_line_error(result, "lacks vae/config.json for tiny-dit (expected layout: DIR/transformer/")


def test_a_folder_whose_weights_do_not_fit_is_refused_naming_keys(tmp_path, fmnist_env):
    from safetensors.torch import load_file, save_file

    folder = write_model_folder(LATENT_PRESETS["tiny-dit"], tmp_path / "model")
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["proj_out_2.weight"]
    save_file(state, weights)
    result = invoke(
        "run",
        "--model",
        "tiny-dit",
        "--model-dir",
        str(folder),
        "--out",
        str(tmp_path / "s.zarr"),
        "--no-progress",
    )
    assert_one_line_error(result, "1 missing keys: proj_out_2.weight")


@pytest.mark.parametrize(
    "command",
    [["blocks", "--model", "sd21"], ["run", "--model", "tiny-dit", "--random-init", "--out", "unused.zarr"]],
)
def test_without_diffusers_a_latent_preset_asks_for_the_extra_in_one_line(monkeypatch, fmnist_env, command):
    # `import diffusers` now fails as if it were not installed
    monkeypatch.setitem(sys.modules, "diffusers", None)
    assert_one_line_error(invoke(*command), "pip install -e '.[latent]'")


def test_blocks_command_prints_the_sd21_table():
    result = invoke("blocks", "--model", "sd21")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.split()[:1] == ["33"])
    assert line.split()[1:3] == ["up_blocks.1", "CrossAttnUpBlock2D"] and "1280" in line and "48x48" in line


@pytest.mark.slow
def test_importing_extract_does_not_import_diffusers():
    import subprocess

    code = (
        "import sys, extract.cli, extract.run, extract.models.adm_presets; "
        "print('diffusers' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["False", "False"], done.stderr
