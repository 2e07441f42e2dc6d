"""Latent diffusion presets: Stable Diffusion U-Nets and DiT, run through diffusers.

Each preset declares what a run needs to know about one published model without loading it:
how an image becomes the model's input (a VAE encode at `image_size`, scaled by the VAE's
`scaling_factor`), its noise schedule (the published defaults; a model folder's
scheduler config wins), its conditioning (SD: a prompt, empty by default, encoded once per
run; DiT: a class label, the null class 1000 by default), and its block numbering.

Blocks are numbered 1..B in the order their outputs are produced by the forward:
for SD every resnet and attention inside a down/mid/up block, then that block's own output
(after its down- or upsampler); for DiT every transformer block. `block_names` computes the
numbering from the config alone (no torch), and a test pins it against forward hooks.

Torch-free: the CLI lists these presets without importing torch or diffusers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

FAMILIES = ("sd", "dit")


@dataclass(frozen=True)
class LatentPreset:
    name: str
    description: str
    family: str  # a key of FAMILIES: "sd" (UNet2DConditionModel + CLIP text) or "dit" (DiTTransformer2DModel)
    image_size: int  # pixels fed to the VAE
    denoiser: dict = field(hash=False)  # diffusers config of the denoiser (what --random-init builds)
    vae: dict = field(hash=False)  # diffusers config of the AutoencoderKL
    text_encoder: dict | None = field(default=None, hash=False)  # CLIPTextConfig keywords (sd only)
    beta_schedule: str = "scaled_linear"  # default schedule when a model folder has no scheduler config
    beta_start: float = 0.00085
    beta_end: float = 0.012
    diffusion_steps: int = (
        1000  # timesteps are integers in [0, steps): x_t uses alphas_cumprod[t], the model sees t
    )
    null_class: int | None = None  # dit: the class that means "no class" (the default label)
    default_block_name: str = ""  # module whose output is extracted when no -b is given
    checkpoint: str = ""  # the published model folder this preset matches, for messages only
    in_channels: int = 3  # image channels (the VAE's input)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.get("latent_channels", 4))

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell: the VAE halves the size at every level but the last."""
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_factor

    @property
    def class_cond(self) -> bool:
        return self.null_class is not None

    @property
    def block_names(self) -> tuple[str, ...]:
        """Module path of block b at position b - 1."""
        return BLOCK_NAMERS[self.family](self.denoiser)

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    @property
    def default_block(self) -> int:
        return self.block_names.index(self.default_block_name) + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _per_block(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def sd_block_names(cfg: dict) -> tuple[str, ...]:
    """UNet2DConditionModel in forward order: inside each down block its resnets (each followed by
    its attention in cross-attention blocks), then the block; the mid block's resnet, attention,
    resnet, then the block; each up block likewise with one more resnet than a down block."""
    down, up = cfg["down_block_types"], cfg["up_block_types"]
    layers = _per_block(cfg.get("layers_per_block", 2), len(down))
    names = []
    for i, kind in enumerate(down):
        for j in range(layers[i]):
            names.append(f"down_blocks.{i}.resnets.{j}")
            if kind.startswith("CrossAttn"):
                names.append(f"down_blocks.{i}.attentions.{j}")
        names.append(f"down_blocks.{i}")
    # UNetMidBlock2DCrossAttn as UNet2DConditionModel builds it: resnet, attention, resnet
    names += ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1", "mid_block"]
    up_layers = list(reversed(layers))
    for i, kind in enumerate(up):
        for j in range(up_layers[i] + 1):
            names.append(f"up_blocks.{i}.resnets.{j}")
            if kind.startswith("CrossAttn"):
                names.append(f"up_blocks.{i}.attentions.{j}")
        names.append(f"up_blocks.{i}")
    return tuple(names)


def dit_block_names(cfg: dict) -> tuple[str, ...]:
    return tuple(f"transformer_blocks.{i}" for i in range(cfg["num_layers"]))


BLOCK_NAMERS = {"sd": sd_block_names, "dit": dit_block_names}


# ---------------------------------------------------------------- published configs
def _sd_vae(sample_size: int) -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


_SD_UNET = dict(
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)

_CLIP_L = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)
# OpenCLIP ViT-H's text tower without its last layer (SD 2.x conditions on the penultimate layer)
_OPENCLIP_H = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_attention_heads=16,
    num_hidden_layers=23,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)

_TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(8, 16),
    sample_size=32,
    scaling_factor=0.5,
)

LATENT_PRESETS: dict[str, LatentPreset] = {
    p.name: p
    for p in [
        LatentPreset(
            name="sd15",
            description="Stable Diffusion 1.5 U-Net (512 px, latents 64x64), empty prompt",
            family="sd",
            image_size=512,
            denoiser=dict(_SD_UNET, sample_size=64, attention_head_dim=8, cross_attention_dim=768),
            vae=_sd_vae(512),
            text_encoder=_CLIP_L,
            default_block_name="up_blocks.1",
            checkpoint="a diffusers folder of stable-diffusion-v1-5",
        ),
        LatentPreset(
            name="sd21",
            description="Stable Diffusion 2.1 U-Net (768 px, latents 96x96), empty prompt",
            family="sd",
            image_size=768,
            denoiser=dict(
                _SD_UNET,
                sample_size=96,
                attention_head_dim=(5, 10, 20, 20),
                cross_attention_dim=1024,
                use_linear_projection=True,
            ),
            vae=_sd_vae(768),
            text_encoder=_OPENCLIP_H,
            default_block_name="up_blocks.1",
            checkpoint="a diffusers folder of stabilityai/stable-diffusion-2-1",
        ),
        LatentPreset(
            name="dit-xl-2-256",
            description="DiT-XL/2 256x256 class-conditional, ImageNet (latents 32x32, 28 blocks), null class",
            family="dit",
            image_size=256,
            denoiser=dict(
                num_attention_heads=16,
                attention_head_dim=72,
                in_channels=4,
                out_channels=8,
                num_layers=28,
                sample_size=32,
                patch_size=2,
            ),
            vae=_sd_vae(256),
            beta_schedule="linear",
            beta_start=0.0001,
            beta_end=0.02,
            null_class=1000,
            default_block_name="transformer_blocks.12",
            checkpoint="a diffusers folder of facebook/DiT-XL-2-256",
        ),
        LatentPreset(
            name="tiny-sd",
            description="a tiny random SD-style U-Net, VAE and text encoder at 32 px (tests)",
            family="sd",
            image_size=32,
            denoiser=dict(
                in_channels=4,
                out_channels=4,
                layers_per_block=1,
                block_out_channels=(16, 32),
                norm_num_groups=8,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                sample_size=16,
                attention_head_dim=4,
                cross_attention_dim=16,
            ),
            vae=_TINY_VAE,
            text_encoder=dict(
                vocab_size=64,
                hidden_size=16,
                intermediate_size=32,
                num_attention_heads=2,
                num_hidden_layers=2,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                projection_dim=16,
                bos_token_id=1,
                eos_token_id=2,
                pad_token_id=2,
            ),
            default_block_name="up_blocks.0",
        ),
        LatentPreset(
            name="tiny-dit",
            description="a tiny random DiT (4 blocks) and VAE at 32 px (tests)",
            family="dit",
            image_size=32,
            denoiser=dict(
                num_attention_heads=2,
                attention_head_dim=8,
                in_channels=4,
                out_channels=8,
                num_layers=4,
                sample_size=16,
                patch_size=2,
            ),
            vae=_TINY_VAE,
            beta_schedule="linear",
            beta_start=0.0001,
            beta_end=0.02,
            null_class=1000,
            default_block_name="transformer_blocks.1",
        ),
    ]
}
