"""Latent diffusion models through diffusers: build, load from local files, condition, encode.

Weights come only from local files: a diffusers model folder in the hub's layout (unet/ or
transformer/, vae/, text_encoder/ and tokenizer/ for SD, scheduler/), or a single
.safetensors (or weights-only torch) file of the denoiser, such as a CleanDIFT U-Net, with
the VAE and text encoder from a folder. Nothing is fetched: HF_HUB_OFFLINE is set before
diffusers is imported and every load passes local_files_only. A denoiser file that does not
fit the preset is refused before any work, naming its keys, as ADM checkpoints are.

diffusers and transformers are an optional extra, imported here on first use only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from torch import nn

from extract.models.latent_presets import LatentPreset
from extract.models.noise import alphas_cumprod
from extract.models.schedules import NoiseSchedule, schedule_from_record
from extract.models.latent_files import (
    file_hashes,
    file_shapes,
    find_weights,
    from_folder,
    read_weights,
    strip_prefix,
    weights_shapes,
)
from extract.models.weights import CheckpointError, file_sha256, fit_of

LATENT_EXTRA = "pip install -e '.[latent]'"


class MissingExtra(ValueError):
    """diffusers or transformers is not installed."""


def libraries() -> SimpleNamespace:
    """diffusers and transformers, imported offline; a missing one is one clear error."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub when it is imported: never touch the network
    try:
        import diffusers
        import transformers
    except ImportError as e:
        raise MissingExtra(
            f"latent diffusion models need diffusers and transformers ({e.name or e} is not installed): "
            f"{LATENT_EXTRA}"
        ) from None
    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()  # config keys of other model classes are ignored on purpose
        lib.utils.logging.disable_progress_bar()  # per-file loading bars; the run has its own
    return SimpleNamespace(diffusers=diffusers, transformers=transformers)


def _first(output) -> torch.Tensor:
    """A block's output as a tensor: down blocks and attentions return tuples, the tensor first."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _tokens_to_map(output) -> torch.Tensor:
    """DiT tokens (N, h*w, D) in row-major patch order -> (N, D, h, w) on their square grid."""
    tokens = _first(output)
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def _text_condition(
    preset: LatentPreset, folder: Path | None, seed: int, prompt: str, class_label: int | None
) -> tuple[torch.Tensor, dict]:
    """The prompt's text-encoder states (1, L, D), and the text encoder's weights record."""
    cond, record = _prompt_states(preset, libraries(), folder, seed, prompt)
    return cond, {"text_encoder": record}


def _class_condition(
    preset: LatentPreset, folder: Path | None, seed: int, prompt: str, class_label: int | None
) -> tuple[torch.Tensor, dict]:
    """The class label (1,); the null class when none is given."""
    return torch.tensor([preset.null_class if class_label is None else class_label], dtype=torch.long), {}


@dataclass(frozen=True)
class Family:
    denoiser_class: str  # diffusers class name
    denoiser_folder: str  # its subfolder in a model folder
    folders: tuple[str, ...]  # subfolders a model folder must have
    structural: tuple[str, ...]  # config fields that set the block table; a folder's must equal the preset's
    call: Callable  # (denoiser, x_t (G, C, h, w), t (G,), cond (G, ...)) -> runs the forward
    convert: Callable  # a block's hook output -> (N, C, H, W)
    # (preset, folder, seed, prompt, class_label) -> (cond (1, ...), weights records of what made it)
    condition: Callable
    meta_condition: Callable  # (preset, batch, device) -> cond (batch, ...) of the right shape
    key_condition: Callable  # (prompt, class_label) -> the store key's "conditioning"


FAMILIES: dict[str, Family] = {
    "sd": Family(
        "UNet2DConditionModel",
        "unet",
        ("unet", "vae", "text_encoder", "tokenizer"),
        (
            "in_channels",
            "down_block_types",
            "up_block_types",
            "block_out_channels",
            "layers_per_block",
            "cross_attention_dim",
        ),
        lambda m, x, t, c: m(x, t, encoder_hidden_states=c, return_dict=False),
        _first,
        _text_condition,
        lambda p, n, device: torch.empty(
            n, p.text_encoder["max_position_embeddings"], p.denoiser["cross_attention_dim"], device=device
        ),
        lambda prompt, label: {"prompt": prompt},
    ),
    "dit": Family(
        "DiTTransformer2DModel",
        "transformer",
        ("transformer", "vae"),
        (
            "in_channels",
            "num_layers",
            "num_attention_heads",
            "attention_head_dim",
            "patch_size",
            "sample_size",
        ),
        lambda m, x, t, c: m(x, timestep=t, class_labels=c, return_dict=False),
        _tokens_to_map,
        _class_condition,
        lambda p, n, device: torch.full((n,), p.null_class, dtype=torch.long, device=device),
        lambda prompt, label: {"class_label": label},
    ),
}


def layout(preset: LatentPreset) -> str:
    fam = FAMILIES[preset.family]
    parts = [f"{sub}/ (config.json + weights)" if sub != "tokenizer" else "tokenizer/" for sub in fam.folders]
    return f"DIR/{', DIR/'.join(parts)}, DIR/scheduler/scheduler_config.json (optional)"


# ---------------------------------------------------------------- building
def build_denoiser(
    preset: LatentPreset, device: str | torch.device = "cpu", config: dict | None = None
) -> nn.Module:
    """The preset's denoiser (or one built from `config`) with diffusers' own init, in eval mode.
    On the `meta` device nothing is allocated: shapes and block tables only."""
    cls = getattr(libraries().diffusers, FAMILIES[preset.family].denoiser_class)
    with torch.device(device):
        model = cls.from_config(dict(config or preset.denoiser))
    return model.eval()


def build_vae(preset: LatentPreset, device: str | torch.device = "cpu") -> nn.Module:
    with torch.device(device):
        return libraries().diffusers.AutoencoderKL(**preset.vae).eval()


def build_text_encoder(preset: LatentPreset) -> nn.Module:
    tf = libraries().transformers
    return tf.CLIPTextModel(tf.CLIPTextConfig(**preset.text_encoder)).eval()


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


# ---------------------------------------------------------------- local files
def check_denoiser_fit(preset: LatentPreset, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """Refuse a denoiser file whose names or shapes differ from the preset's, naming them."""
    prefix = strip_prefix(shapes)
    found = {k[len(prefix) :]: v for k, v in shapes.items()}
    expected = {k: tuple(v.shape) for k, v in build_denoiser(preset, "meta").state_dict().items()}
    report = fit_of(found, expected)
    if not report.ok:
        raise CheckpointError(
            f"{where} does not fit preset {preset.name!r} ({FAMILIES[preset.family].denoiser_class}): "
            f"{report.describe()}"
        )


def check_folder(preset: LatentPreset, folder: Path) -> None:
    """Layout, structure and denoiser weights of a model folder, before any work."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder not found: {folder} (expected a diffusers folder: {layout(preset)})"
        )
    fam = FAMILIES[preset.family]
    for sub in fam.folders:
        config = "" if sub == "tokenizer" else "config.json"
        if not (folder / sub / config).exists():
            raise FileNotFoundError(
                f"{folder} lacks {sub}/{config} for {preset.name} (expected layout: {layout(preset)})"
            )
    config = json.loads((folder / fam.denoiser_folder / "config.json").read_text())
    differs = [
        f"{k}: folder has {config.get(k)!r}, preset has {preset.denoiser[k]!r}"
        for k in fam.structural
        if k in preset.denoiser and json.dumps(config.get(k)) != json.dumps(preset.denoiser[k])
    ]
    if differs:
        raise CheckpointError(
            f"{folder}/{fam.denoiser_folder} is not a {preset.name} model: {'; '.join(differs)}"
        )
    check_denoiser_fit(
        preset, weights_shapes(find_weights(folder / fam.denoiser_folder)), f"{folder}/{fam.denoiser_folder}"
    )


def check_sources(preset: LatentPreset, model_dir: Path | None, ckpt: Path | None, random_init: bool) -> None:
    """Every error in where the weights come from, before any work."""
    if ckpt is not None and random_init:
        raise ValueError("--ckpt and --random-init exclude each other")
    if model_dir is None and not random_init:
        raise ValueError(
            f"{preset.name} needs --model-dir DIR (a local diffusers folder: {layout(preset)}), "
            "or --random-init"
        )
    if ckpt is not None:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}")
        check_denoiser_fit(preset, file_shapes(Path(ckpt)), str(ckpt))
    if model_dir is not None:
        if ckpt is None and not random_init:
            check_folder(preset, model_dir)
        elif not Path(model_dir).is_dir():
            raise FileNotFoundError(
                f"model folder not found: {model_dir} (expected a diffusers folder: {layout(preset)})"
            )


def load_denoiser_file(preset: LatentPreset, path: Path, config: dict | None) -> nn.Module:
    """A denoiser from a single state_dict file (safetensors or weights-only torch)."""
    check_denoiser_fit(preset, file_shapes(path), str(path))
    state = read_weights(path)
    prefix = strip_prefix(state)
    model = build_denoiser(preset, "meta", config)
    model.load_state_dict({k[len(prefix) :]: v for k, v in state.items()}, strict=True, assign=True)
    return model.float().eval()


# ---------------------------------------------------------------- conditioning
def empty_prompt_ids(text_config: dict, length: int) -> torch.Tensor:
    """What CLIP's tokenizer makes of "" padded to `length`: start, end, then padding. (1, length)."""
    ids = [text_config["bos_token_id"], text_config["eos_token_id"]] + [text_config["pad_token_id"]] * (
        length - 2
    )
    return torch.tensor([ids], dtype=torch.long)


def encode_prompt(text_encoder: nn.Module, tokenizer, prompt: str) -> torch.Tensor:
    """The text encoder's last hidden states for one prompt, (1, 77, D) float32."""
    if tokenizer is None:
        if prompt:
            raise ValueError("a non-empty --prompt needs the tokenizer of a model folder (--model-dir)")
        ids = empty_prompt_ids(text_encoder.config.to_dict(), text_encoder.config.max_position_embeddings)
    else:
        ids = tokenizer(
            prompt,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
    with torch.inference_mode():
        return text_encoder(ids.to(text_encoder.device))[0].float()


# ---------------------------------------------------------------- the whole model
@dataclass
class LatentModel:
    """A latent diffusion model ready to extract: denoiser, VAE, the run's conditioning and schedule."""

    preset: LatentPreset
    denoiser: nn.Module
    vae: nn.Module
    cond: torch.Tensor  # (1, L, D) prompt states (sd) or (1,) class label (dit)
    abar: torch.Tensor  # (steps,) float32 alphas_cumprod
    schedule: dict  # the schedule's source and parameters (part of the store key)
    weights: dict  # sources and sha256 of every weights file used, or random-init seeds (part of the key)
    vae_weights: dict  # the VAE's part of `weights`: all the latents depend on

    def to(self, device) -> LatentModel:
        self.denoiser.requires_grad_(False).to(device)
        self.vae.requires_grad_(False).to(device)
        self.cond = self.cond.to(device)
        return self

    def batch_cond(self, n: int) -> torch.Tensor:
        return self.cond.expand(n, *self.cond.shape[1:]).contiguous()

    def call(self, x_t: torch.Tensor, t: torch.Tensor) -> None:
        FAMILIES[self.preset.family].call(self.denoiser, x_t, t, self.batch_cond(x_t.shape[0]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return encode_latents(self.vae, x)


def read_schedule(preset: LatentPreset, model_dir: Path | None) -> dict:
    """The folder's scheduler config where there is one, else the preset's published defaults."""
    path = Path(model_dir) / "scheduler" / "scheduler_config.json" if model_dir else None
    if path is not None and path.is_file():
        cfg = json.loads(path.read_text())
        return {
            "source": "scheduler/scheduler_config.json",
            "beta_schedule": cfg.get("beta_schedule", "linear"),
            "beta_start": cfg.get("beta_start", 0.0001),
            "beta_end": cfg.get("beta_end", 0.02),
            "steps": cfg.get("num_train_timesteps", 1000),
            "trained_betas": cfg.get("trained_betas"),
        }
    return {
        "source": "preset",
        "beta_schedule": preset.beta_schedule,
        "beta_start": preset.beta_start,
        "beta_end": preset.beta_end,
        "steps": preset.diffusion_steps,
        "trained_betas": None,
    }


def preset_schedule(preset: LatentPreset, options) -> NoiseSchedule:
    """The noise schedule a run of this preset uses: its folder's scheduler config, else the preset's."""
    return schedule_from_record(read_schedule(preset, options.model_dir), f"{preset.name} schedule")


def load_latent_model(
    preset: LatentPreset,
    *,
    model_dir: Path | None = None,
    ckpt: Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    prompt: str = "",
    class_label: int | None = None,
) -> LatentModel:
    """Denoiser from --ckpt, the folder, or random (seeded); VAE and text encoder from the folder,
    or random when there is none. The conditioning is computed here, once."""
    check_sources(preset, model_dir, ckpt, random_init)
    lib = libraries()
    fam = FAMILIES[preset.family]
    folder = Path(model_dir) if model_dir else None
    weights: dict = {"model_dir": folder.name if folder else None}
    if random_init:
        denoiser = _seeded(seed, lambda: build_denoiser(preset))
        weights["denoiser"] = {"random_init": True, "init_seed": seed}
    elif ckpt is not None:
        config = (
            json.loads((folder / fam.denoiser_folder / "config.json").read_text())
            if folder and (folder / fam.denoiser_folder / "config.json").is_file()
            else None
        )
        denoiser = load_denoiser_file(preset, Path(ckpt), config)
        weights["denoiser"] = {"checkpoint": Path(ckpt).name, "sha256": file_sha256(ckpt)}
    else:
        denoiser, weights["denoiser"] = from_folder(
            getattr(lib.diffusers, fam.denoiser_class), folder, fam.denoiser_folder
        )
    if folder is not None:
        vae, weights["vae"] = from_folder(lib.diffusers.AutoencoderKL, folder, "vae")
    else:
        vae = _seeded(seed + 1, lambda: build_vae(preset))
        weights["vae"] = {"random_init": True, "init_seed": seed + 1}
    cond, records = fam.condition(preset, folder, seed, prompt, class_label)
    weights.update(records)
    schedule = read_schedule(preset, folder)
    abar = alphas_cumprod(
        schedule["beta_schedule"],
        schedule["beta_start"],
        schedule["beta_end"],
        schedule["steps"],
        schedule["trained_betas"],
    )
    return LatentModel(preset, denoiser, vae, cond, abar, schedule, weights, weights["vae"])


def _prompt_states(
    preset: LatentPreset, lib, folder: Path | None, seed: int, prompt: str
) -> tuple[torch.Tensor, dict]:
    if folder is None:
        encoder = _seeded(seed + 2, lambda: build_text_encoder(preset))
        return encode_prompt(encoder, None, prompt), {"random_init": True, "init_seed": seed + 2}
    encoder, hashes = from_folder(lib.transformers.CLIPTextModel, folder, "text_encoder")
    tokenizer = lib.transformers.CLIPTokenizer.from_pretrained(
        folder, subfolder="tokenizer", local_files_only=True
    )
    hashes.update(file_hashes(sorted(f for f in (folder / "tokenizer").iterdir() if f.is_file())))
    return encode_prompt(encoder, tokenizer, prompt), hashes


def encode_latents(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, S, S) in [-1, 1] -> latents (N, 4, S/f, S/f) float32: the posterior mean,
    shifted and scaled by the VAE's own factors (what the denoiser was trained on). The mean,
    not a sample, so a cached latent is a function of the image alone."""
    with torch.inference_mode():
        mean = vae.encode(x).latent_dist.mean.float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (mean - shift) * vae.config.scaling_factor
