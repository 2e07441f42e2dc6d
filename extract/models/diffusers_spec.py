"""Any diffusers denoiser from a local folder, and the `sdxl` preset: what a run knows without torch.

`--model diffusers --model-dir DIR` reads DIR's denoiser config (unet/ or transformer/, or a
denoiser-only folder of a pixel-space UNet2DModel), its VAE config (none: pixel space) and its
scheduler config; `--model sdxl` is the published SDXL base U-Net, checked against the folder.
A `DiffusersSpec` plays the part a preset plays for the other families (image size, steps,
block numbering, default block); its block numbering comes from a forward on the meta device
(extract.models.diffusers_any), so it is filled in there.

Torch-free: the CLI names these models without importing torch or diffusers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

FOLDER_MODEL = "diffusers"  # any local diffusers folder
DENOISER_FOLDERS = ("unet", "transformer")


@dataclass(frozen=True)
class DiffusersSpec:
    name: str
    denoiser_class: str  # diffusers class name of the denoiser
    denoiser: dict = field(hash=False)  # its config.json
    vae: dict | None = field(default=None, hash=False)  # the AutoencoderKL's config; None: pixel space
    image_size: int = 0
    diffusion_steps: int = 1000
    beta_schedule: str = "linear"  # used only when the folder has no scheduler config (DDPM's defaults)
    beta_start: float = 0.0001
    beta_end: float = 0.02
    scheduler_class: str = ""
    null_class: int | None = None  # the label meaning "no class" (DiT), where the config has one
    class_cond: bool = False
    default_block_name: str = ""
    block_names: tuple[str, ...] = ()  # the numbered table, then modules asked for by name outside it
    table_size: int = 0  # how many of block_names are the numbered table
    # each block's place in the forward's order (early exit)
    block_ranks: tuple[int, ...] = field(default=(), compare=False)
    description: str = ""
    folder: str | None = None  # the model folder's name, for records

    @property
    def denoiser_folder(self) -> str:
        return "transformer" if "Transformer" in self.denoiser_class else "unet"

    @property
    def in_channels(self) -> int:
        """Image channels: the VAE's input, or the pixel-space denoiser's."""
        return int((self.vae or self.denoiser).get("in_channels", 3))

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1) if self.vae else 1

    @property
    def latent_channels(self) -> int:
        return int(self.vae.get("latent_channels", 4)) if self.vae else self.in_channels

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_factor

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    @property
    def default_block(self) -> int:
        name = (
            self.default_block_name
            if self.default_block_name in self.block_names
            else self.block_names[(self.table_size - 1) // 2]
        )
        return self.block_names.index(name) + 1

    def to_dict(self) -> dict:
        """What the store key records: the configs and the modules by number (not the table's order)."""
        return {
            "name": self.name,
            "denoiser_class": self.denoiser_class,
            "denoiser": self.denoiser,
            "vae": self.vae,
            "image_size": self.image_size,
            "scheduler_class": self.scheduler_class,
            "null_class": self.null_class,
            "folder": self.folder,
        }


def _size(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def denoiser_folder(folder: Path) -> Path:
    """DIR/unet or DIR/transformer; a folder that is itself a UNet2DModel's (config.json at its root)
    is one too."""
    for sub in DENOISER_FOLDERS:
        if (folder / sub / "config.json").is_file():
            return folder / sub
    if (folder / "config.json").is_file() and "_class_name" in _read(folder / "config.json"):
        return folder
    raise FileNotFoundError(
        f"{folder}: no denoiser (expected unet/config.json or transformer/config.json, "
        "or a UNet2DModel's config.json)"
    )


def spec_from_folder(folder: Path, name: str = FOLDER_MODEL) -> DiffusersSpec:
    """The spec of a local diffusers folder (no block numbering yet)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder not found: {folder} "
            "(expected a diffusers folder: unet/ or transformer/, vae/, scheduler/, ...)"
        )
    den = denoiser_folder(folder)
    config = _read(den / "config.json")
    vae = _read(folder / "vae" / "config.json") or None
    sched = _read(folder / "scheduler" / "scheduler_config.json") or _read(
        den.parent / "scheduler_config.json"
    )
    factor = 2 ** (len(vae["block_out_channels"]) - 1) if vae else 1
    size = _size(config.get("sample_size") or (vae or {}).get("sample_size") or 32) * factor
    return DiffusersSpec(
        name=name,
        denoiser_class=config.get("_class_name", ""),
        denoiser=config,
        vae=vae,
        image_size=size,
        diffusion_steps=int(sched.get("num_train_timesteps", 1000)),
        scheduler_class=sched.get("_class_name", ""),
        description=f"the diffusers folder {folder.name}",
        folder=folder.name,
    )


def with_blocks(
    spec: DiffusersSpec,
    names: tuple[str, ...],
    table_size: int,
    default: str,
    null_class: int | None,
    class_cond: bool,
) -> DiffusersSpec:
    return replace(
        spec,
        block_names=tuple(names),
        table_size=table_size,
        default_block_name=spec.default_block_name or default,
        null_class=null_class,
        class_cond=class_cond,
    )


# ---------------------------------------------------------------- the sdxl preset
SDXL_UNET = dict(
    _class_name="UNet2DConditionModel",
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
)
SDXL_STRUCTURAL = (
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "transformer_layers_per_block",
    "cross_attention_dim",
    "addition_embed_type",
    "projection_class_embeddings_input_dim",
)

PRESET_SPECS = {
    "sdxl": DiffusersSpec(
        name="sdxl",
        denoiser_class="UNet2DConditionModel",
        denoiser=SDXL_UNET,
        vae=SDXL_VAE,
        image_size=1024,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        default_block_name="up_blocks.1",
        description="SDXL base 1.0 U-Net (1024 px, latents 128x128), empty prompt; "
        "--model-dir: its diffusers folder",
    ),
}
STRUCTURAL = {"sdxl": SDXL_STRUCTURAL}


def check_preset_folder(spec: DiffusersSpec, folder: Path) -> DiffusersSpec:
    """A preset's folder must hold the preset's denoiser; the folder's own configs are what run."""
    found = spec_from_folder(folder, spec.name)
    differs = [
        f"{k}: folder has {found.denoiser.get(k)!r}, preset has {spec.denoiser[k]!r}"
        for k in STRUCTURAL.get(spec.name, ())
        if json.dumps(found.denoiser.get(k))
        != json.dumps(list(spec.denoiser[k]) if isinstance(spec.denoiser[k], tuple) else spec.denoiser[k])
    ]
    if found.denoiser_class != spec.denoiser_class or differs:
        raise ValueError(f"{folder} is not a {spec.name} model: {'; '.join(differs) or found.denoiser_class}")
    return replace(
        found,
        default_block_name=spec.default_block_name,
        description=spec.description,
        image_size=spec.image_size,
    )


def resolve_spec(model: str, model_dir: Path | None) -> DiffusersSpec:
    """The spec of `--model diffusers --model-dir DIR` or of a preset (its folder's, when given)."""
    if model in PRESET_SPECS:
        return (
            check_preset_folder(PRESET_SPECS[model], model_dir)
            if model_dir is not None
            else PRESET_SPECS[model]
        )
    if model_dir is None:
        raise ValueError(
            f"--model {model} needs --model-dir DIR (a local diffusers folder: unet/ or transformer/, "
            "vae/, scheduler/, text encoders)"
        )
    return spec_from_folder(model_dir, model)
