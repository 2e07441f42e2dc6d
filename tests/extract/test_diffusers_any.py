"""`--model diffusers --model-dir DIR`: any local diffusers denoiser (UNet2DModel in pixel space,
SD- and SDXL-style UNet2DConditionModel, DiT, PixArt, SD3) on tiny random models saved in the
pipeline layout. The captured feature of a module named with -b equals that module's output
from a plain forward hook on the same model and inputs; early exit; clear errors; the sdxl
preset's table on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from extract.data.sources import FeatureInput
from extract.models.diffusers_any import build_denoiser, capture, resolve_table
from extract.models.diffusers_spec import PRESET_SPECS, spec_from_folder
from extract.models.latent import libraries
from extract.models.noise import alphas_cumprod, draw_noise, latent_q_sample
from extract.store.schema import FeatureKey, FeatureStore
from tests.extract.latent_fixtures import write_tokenizer
from tests.extract.test_cli import assert_one_line_error, invoke

T = 300
VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(8, 16),
    sample_size=16,
    scaling_factor=0.5,
)
CLIP = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_attention_heads=2,
    num_hidden_layers=2,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=8,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
UNET_SD = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    attention_head_dim=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16,
)
DDPM = {
    "_class_name": "DDPMScheduler",
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "num_train_timesteps": 1000,
}


def _save(module, folder: Path) -> None:
    module.save_pretrained(folder, safe_serialization=True)


def _pipeline(folder: Path, cls: str, config: dict, *, encoders=(), scheduler=DDPM) -> Path:
    """A pipeline folder: model_index.json, the denoiser, a tiny VAE, text encoders and tokenizers."""
    lib = libraries()
    torch.manual_seed(0)
    sub = "transformer" if "Transformer" in cls else "unet"
    _save(getattr(lib.diffusers, cls)(**config), folder / sub)
    _save(lib.diffusers.AutoencoderKL(**VAE), folder / "vae")
    index = {"_class_name": "AnyPipeline", sub: ["diffusers", cls], "vae": ["diffusers", "AutoencoderKL"]}
    for i, enc in enumerate(encoders):
        suffix = f"_{i + 1}" if i else ""
        tf = lib.transformers
        _save(getattr(tf, enc)(tf.CLIPTextConfig(**CLIP)), folder / f"text_encoder{suffix}")
        write_tokenizer(folder / f"tokenizer{suffix}")
        index.update(
            {
                f"text_encoder{suffix}": ["transformers", enc],
                f"tokenizer{suffix}": ["transformers", "CLIPTokenizer"],
            }
        )
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def _ids(length: int = 77) -> torch.Tensor:
    return torch.tensor([[1, 2] + [2] * (length - 2)])  # the empty prompt: start, end, padding


def _clip_states(folder: Path):
    tf = libraries().transformers
    with torch.inference_mode():
        return tf.CLIPTextModel.from_pretrained(folder / "text_encoder")(_ids())[0]


def _sdxl_states(folder: Path):
    tf = libraries().transformers
    with torch.inference_mode():
        one = tf.CLIPTextModel.from_pretrained(folder / "text_encoder")(_ids(), output_hidden_states=True)
        two = tf.CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2")(
            _ids(), output_hidden_states=True
        )
    return torch.cat([one.hidden_states[-2], two.hidden_states[-2]], -1), two[0]


def _grid(out: torch.Tensor) -> torch.Tensor:
    out = out[0] if isinstance(out, tuple) else out
    if out.dim() == 3:
        side = int(out.shape[1] ** 0.5)
        return out.transpose(1, 2).reshape(out.shape[0], -1, side, side)
    return out


def _reference(
    folder: Path, cls: str, sub: str, block: str, call, x0: torch.Tensor, rows, flow: bool = False, pick=_grid
) -> torch.Tensor:
    """The module's output from a plain forward hook on a full forward of the same noised input."""
    model = getattr(libraries().diffusers, cls).from_pretrained(folder / sub if sub else folder).eval()
    eps = draw_noise(tuple(x0.shape[1:]), 0, rows, T, 0)
    x_t = (
        (1 - T / 1000) * x0 + T / 1000 * eps
        if flow
        else latent_q_sample(alphas_cumprod("linear", 0.0001, 0.02, 1000), x0, T, eps)
    )
    seen = []
    model.get_submodule(block).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.inference_mode():
        call(model, x_t, torch.full((x0.shape[0],), T))
    return pick(seen[0])


def _run(tmp_path: Path, folder: Path, block: str, *args: str) -> FeatureStore:
    out = tmp_path / "s.zarr"
    result = invoke(
        "run",
        "--model",
        "diffusers",
        "--model-dir",
        str(folder),
        "-b",
        block,
        "-t",
        str(T),
        "--pool",
        "full",
        "--limit",
        "2",
        "--shard-rows",
        "2",
        "--micro-batch",
        "2",
        "--store-dtype",
        "float32",
        "--no-progress",
        "--out",
        str(out),
        *args,
    )
    assert result.exit_code == 0, result.output
    return FeatureStore.open(out)


def _latents(tmp_path: Path) -> torch.Tensor:
    cache = next((tmp_path / "latents").glob("diffusers-*.zarr"))
    from extract.models.latent_run import LATENT_KEY

    return torch.from_numpy(FeatureStore.open(cache).array(LATENT_KEY)[:])


def _check(tmp_path, folder, cls, sub, block, call, *args, flow=False):
    table = invoke("blocks", "--model", "diffusers", "--model-dir", str(folder))
    assert table.exit_code == 0 and block in table.output or "transformer_blocks.0" in table.output, (
        table.output
    )
    store = _run(tmp_path, folder, block, *args)
    key = store.attrs["key"]
    b = int(next(k for k, v in key["modules"].items() if v == block))
    got = store.array(FeatureKey(T, b, None))[:]
    rows = [int(i) for i in store.index()]
    ref = _reference(folder, cls, sub, block, call, _latents(tmp_path), rows, flow)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-5)
    return key


def test_pixel_space_unet2dmodel_denoiser_only_folder(tmp_path, fmnist_env):
    folder = tmp_path / "ddpm"
    torch.manual_seed(0)
    unet = libraries().diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    _save(unet, folder)
    (folder / "scheduler_config.json").write_text(json.dumps(DDPM))
    key = _check(tmp_path, folder, "UNet2DModel", "", "down_blocks.1.attentions.0", lambda m, x, t: m(x, t))
    assert key["encoding"].startswith("pixels") and key["weights"]["vae"] == {"pixel_space": True}
    # the cached "latents" are the images themselves
    images = FeatureInput(_fmnist(), 16, 3)
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert torch.equal(_latents(tmp_path), torch.stack([images[int(i)][1] for i in store.index()]))


def test_sd_style_unet_with_its_text_encoder(tmp_path, fmnist_env):
    folder = _pipeline(tmp_path / "sd", "UNet2DConditionModel", UNET_SD, encoders=("CLIPTextModel",))
    states = _clip_states(folder)
    key = _check(
        tmp_path,
        folder,
        "UNet2DConditionModel",
        "unet",
        "down_blocks.0.resnets.0",
        lambda m, x, t: m(x, t, encoder_hidden_states=states.expand(x.shape[0], -1, -1)),
    )
    assert (
        key["conditioning"] == {"prompt": ""}
        and "text_encoder" in key["weights"]
        and "tokenizer" in key["weights"]
    )


def test_sdxl_style_unet_with_pooled_embeddings_and_time_ids(tmp_path, fmnist_env):
    config = dict(
        UNET_SD,
        cross_attention_dim=32,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=8 + 6 * 4,
    )
    folder = _pipeline(
        tmp_path / "sdxl",
        "UNet2DConditionModel",
        config,
        encoders=("CLIPTextModel", "CLIPTextModelWithProjection"),
    )
    states, pooled = _sdxl_states(folder)
    time_ids = torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]])

    def call(m, x, t):
        n = x.shape[0]
        return m(
            x,
            t,
            encoder_hidden_states=states.expand(n, -1, -1),
            added_cond_kwargs={"text_embeds": pooled.expand(n, -1), "time_ids": time_ids.expand(n, -1)},
        )

    _check(tmp_path, folder, "UNet2DConditionModel", "unet", "up_blocks.1.attentions.0", call)


def test_dit_transformer_with_its_null_class_and_a_given_label(tmp_path, fmnist_env):
    config = dict(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    folder = _pipeline(tmp_path / "dit", "DiTTransformer2DModel", config)
    key = _check(
        tmp_path,
        folder,
        "DiTTransformer2DModel",
        "transformer",
        "transformer_blocks.1",
        lambda m, x, t: m(x, timestep=t, class_labels=torch.full((x.shape[0],), 10)),
    )
    assert key["conditioning"] == {"class_label": 10}
    _check(
        tmp_path / "l",
        folder,
        "DiTTransformer2DModel",
        "transformer",
        "transformer_blocks.0",
        lambda m, x, t: m(x, timestep=t, class_labels=torch.full((x.shape[0],), 3)),
        "--class-label",
        "3",
    )


def test_pixart_transformer_with_text_states_and_resolution(tmp_path, fmnist_env):
    # inner dim 12: a multiple of 3 for the size embedding
    config = dict(
        num_attention_heads=3,
        attention_head_dim=4,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        caption_channels=12,
        cross_attention_dim=12,
        use_additional_conditions=True,
    )
    folder = _pipeline(tmp_path / "pixart", "PixArtTransformer2DModel", config)
    states = torch.randn(1, 5, 12)
    save_file({"prompt_embeds": states}, str(tmp_path / "cond.safetensors"))
    added = {"resolution": torch.tensor([[16.0, 16.0]]), "aspect_ratio": torch.tensor([[1.0]])}

    def call(m, x, t):
        n = x.shape[0]
        return m(
            x,
            encoder_hidden_states=states.expand(n, -1, -1),
            timestep=t,
            added_cond_kwargs={k: v.expand(n, -1) for k, v in added.items()},
        )

    key = _check(
        tmp_path,
        folder,
        "PixArtTransformer2DModel",
        "transformer",
        "transformer_blocks.1",
        call,
        "--cond",
        str(tmp_path / "cond.safetensors"),
    )
    assert len(key["conditioning"]["cond_sha256"]) == 64


def test_sd3_transformer_with_text_and_pooled_from_a_cond_file(tmp_path, fmnist_env):
    config = dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=12,
        caption_projection_dim=8,
        pooled_projection_dim=6,
        pos_embed_max_size=8,
    )
    folder = _pipeline(
        tmp_path / "sd3",
        "SD3Transformer2DModel",
        config,
        scheduler={"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000},
    )
    states, pooled = torch.randn(1, 5, 12), torch.randn(1, 6)
    save_file({"prompt_embeds": states, "pooled_prompt_embeds": pooled}, str(tmp_path / "cond.safetensors"))

    def call(m, x, t):
        n = x.shape[0]
        return m(
            x,
            encoder_hidden_states=states.expand(n, -1, -1),
            pooled_projections=pooled.expand(n, -1),
            timestep=t,
        )

    store = _run(tmp_path, folder, "transformer_blocks.0", "--cond", str(tmp_path / "cond.safetensors"))
    # a joint block returns (text, image) tokens
    ref = _reference(
        folder,
        "SD3Transformer2DModel",
        "transformer",
        "transformer_blocks.0",
        call,
        _latents(tmp_path),
        [int(i) for i in store.index()],
        flow=True,
        pick=lambda out: _grid(out[1]),
    )
    np.testing.assert_allclose(store.array(FeatureKey(T, 1, None))[:], ref.numpy(), rtol=1e-4, atol=1e-5)
    # without the file: one clear error naming what is missing
    result = invoke(
        "run",
        "--model",
        "diffusers",
        "--model-dir",
        str(folder),
        "--limit",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "x.zarr"),
    )
    assert_one_line_error(result, "--cond FILE")


def test_unknown_module_and_non_map_outputs_are_one_clear_error(tmp_path, fmnist_env):
    folder = _pipeline(tmp_path / "sd", "UNet2DConditionModel", UNET_SD, encoders=("CLIPTextModel",))
    result = invoke(
        "run",
        "--model",
        "diffusers",
        "--model-dir",
        str(folder),
        "-b",
        "down_blocks.7.nope",
        "--out",
        str(tmp_path / "x.zarr"),
        "--no-progress",
    )
    assert_one_line_error(result, "unknown module 'down_blocks.7.nope'")
    assert "down_blocks.0.resnets.0" in result.output
    result = invoke(
        "run",
        "--model",
        "diffusers",
        "--model-dir",
        str(folder),
        "-b",
        "time_embedding",
        "--out",
        str(tmp_path / "x.zarr"),
        "--no-progress",
    )
    assert_one_line_error(result, "module 'time_embedding'")
    result = invoke("run", "--model", "diffusers", "--out", str(tmp_path / "x.zarr"), "--no-progress")
    assert_one_line_error(result, "--model-dir")


def test_early_exit_stops_after_the_deepest_module_and_names_outside_the_table_are_numbered_after_it(
    tmp_path,
):
    folder = _pipeline(tmp_path / "sd", "UNet2DConditionModel", UNET_SD)
    spec, table = resolve_table(spec_from_folder(folder), ("down_blocks.0.attentions.0.proj_out", "conv_in"))
    names = [r.module for r in table]
    assert (
        names[-2:] == ["conv_in", "down_blocks.0.attentions.0.proj_out"] and spec.table_size == len(names) - 2
    )
    torch.manual_seed(0)
    model = build_denoiser(spec)
    after = []
    model.get_submodule("down_blocks.1").register_forward_hook(lambda *a: after.append(1))
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([5, 500]), {"prompt_embeds": torch.randn(2, 3, 16)}
    with torch.inference_mode():
        early = capture(
            model,
            spec,
            x,
            t,
            cond,
            [
                names.index("down_blocks.0.attentions.0.proj_out") + 1,
                names.index("down_blocks.0.resnets.0") + 1,
            ],
        )
        assert not after  # down_blocks.1 runs after the deepest capture: never reached
        full = capture(model, spec, x, t, cond, list(range(1, len(names) + 1)), stop_early=False)
    assert after
    for b, value in early.items():
        assert torch.equal(value, full[b])
    assert tuple(full[names.index("conv_in") + 1].shape) == (2, 8, 8, 8)


def test_the_sdxl_preset_table_builds_on_the_meta_device():
    spec, table = resolve_table(PRESET_SPECS["sdxl"])
    rows = {r.module: r for r in table}
    assert len(table) == 35 and spec.image_size == 1024 and spec.latent_size == 128
    assert (rows["up_blocks.1"].channels, rows["up_blocks.1"].height) == (640, 128) and (
        rows["up_blocks.0"].channels,
        rows["up_blocks.0"].height,
    ) == (1280, 64)
    assert spec.block_names[spec.default_block - 1] == "up_blocks.1"
    result = invoke("blocks", "--model", "sdxl")
    assert result.exit_code == 0 and "up_blocks.0.attentions.2" in result.output


def _fmnist():
    from extract.data.sources import fashion_mnist

    return fashion_mnist(None, "train")
