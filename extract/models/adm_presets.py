"""Named model presets: guided-diffusion's published flags as a registry.

Each preset reproduces the MODEL_FLAGS that guided-diffusion's README gives for one
of its public checkpoints, so `--model NAME --ckpt FILE` builds the architecture the
file was trained with. The preset (as a dict) is stored with every cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    image_size: int
    num_channels: int
    num_res_blocks: int
    channel_mult: tuple[float, ...]
    attention_resolutions: tuple[int, ...]  # feature-map sizes that get attention
    in_channels: int = 3
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False
    learn_sigma: bool = True
    class_cond: bool = False
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"
    checkpoint: str = ""  # the published file this preset matches, for messages only
    shipped: bool = False  # weights ship in extract/weights/<name>.pt and are the default
    # a U-Net built from --model-flags (extract.models.adm_flags): its flag line, written canonically,
    # and whether the U-Net is fed t * 1000 / diffusion_steps (improved-diffusion's rescale_timesteps)
    flags: str = ""
    rescale_timesteps: bool = False

    def unet_kwargs(self) -> dict:
        """Keyword arguments of guided_diffusion.unet.UNetModel for this preset."""
        return dict(
            image_size=self.image_size,
            in_channels=self.in_channels,
            model_channels=self.num_channels,
            out_channels=self.in_channels * (2 if self.learn_sigma else 1),
            num_res_blocks=self.num_res_blocks,
            # guided-diffusion's create_model turns resolutions into downsample rates
            attention_resolutions=tuple(self.image_size // r for r in self.attention_resolutions),
            channel_mult=self.channel_mult,
            num_classes=1000 if self.class_cond else None,
            num_heads=self.num_heads,
            num_head_channels=self.num_head_channels,
            num_heads_upsample=self.num_heads_upsample,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resblock_updown=self.resblock_updown,
            use_new_attention_order=self.use_new_attention_order,
        )

    @property
    def num_input_blocks(self) -> int:
        levels = len(self.channel_mult)
        return 1 + levels * self.num_res_blocks + (levels - 1)

    @property
    def num_blocks(self) -> int:
        """Blocks numbered 1..2L+1: input blocks, the middle block, output blocks."""
        return 2 * self.num_input_blocks + 1

    @property
    def middle_block(self) -> int:
        return self.num_input_blocks + 1

    @property
    def default_block(self) -> int:
        """output_blocks[4], the paper's best block: b=24 on ADM-256 and on the demo model.
        Presets with fewer decoder blocks fall back to the last one."""
        return min(self.middle_block + 5, self.num_blocks)

    def to_dict(self) -> dict:
        """The preset as stores record it (in their key). Fields added later appear only when set,
        so every preset keeps the dict, and every store the key, it had before."""
        out = dataclasses.asdict(self)
        for name in ("flags", "rescale_timesteps"):
            if not out[name]:
                del out[name]
        return out


_ADM = dict(
    num_channels=256,
    num_res_blocks=2,
    attention_resolutions=(32, 16, 8),
    num_head_channels=64,
    learn_sigma=True,
    noise_schedule="linear",
)

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            name="adm256-uncond",
            description="ADM 256x256 unconditional, ImageNet (the paper's model)",
            image_size=256,
            channel_mult=(1, 1, 2, 2, 4, 4),
            checkpoint="256x256_diffusion_uncond.pt",
            **_ADM,
        ),
        ModelPreset(
            name="adm256-cond",
            description="ADM 256x256 class-conditional, ImageNet",
            image_size=256,
            channel_mult=(1, 1, 2, 2, 4, 4),
            class_cond=True,
            checkpoint="256x256_diffusion.pt",
            **_ADM,
        ),
        ModelPreset(
            name="adm256-lsun",
            description="ADM 256x256 unconditional, LSUN bedroom/cat/horse "
            "(same architecture as adm256-uncond)",
            image_size=256,
            channel_mult=(1, 1, 2, 2, 4, 4),
            checkpoint="lsun_bedroom.pt, lsun_cat.pt, lsun_horse.pt, lsun_horse_nodropout.pt",
            **_ADM,
        ),
        ModelPreset(
            name="adm512-cond",
            description="ADM 512x512 class-conditional, ImageNet",
            image_size=512,
            channel_mult=(0.5, 1, 1, 2, 2, 4, 4),
            class_cond=True,
            checkpoint="512x512_diffusion.pt",
            **_ADM,
        ),
        ModelPreset(
            name="adm128-cond",
            description="ADM 128x128 class-conditional, ImageNet",
            image_size=128,
            num_channels=256,
            num_res_blocks=2,
            channel_mult=(1, 1, 2, 3, 4),
            attention_resolutions=(32, 16, 8),
            num_heads=4,
            class_cond=True,
            checkpoint="128x128_diffusion.pt",
        ),
        ModelPreset(
            name="adm64-cond",
            description="ADM 64x64 class-conditional, ImageNet",
            image_size=64,
            num_channels=192,
            num_res_blocks=3,
            channel_mult=(1, 2, 3, 4),
            attention_resolutions=(32, 16, 8),
            num_head_channels=64,
            use_new_attention_order=True,
            class_cond=True,
            noise_schedule="cosine",
            checkpoint="64x64_diffusion.pt",
        ),
        ModelPreset(
            name="tiny",
            description="a 1.4M-parameter ADM-style U-Net at 32x32, for tests and the default run",
            image_size=32,
            num_channels=32,
            num_res_blocks=1,
            channel_mult=(1, 2, 2),
            attention_resolutions=(8,),
            num_head_channels=16,
            learn_sigma=False,
        ),
        ModelPreset(
            name="demo-fmnist",
            description="the shipped demo: ADM-256's block topology at 1/8 scale, trained without labels "
            "on Fashion-MNIST (32x32, grayscale)",
            # every level of adm256-uncond with each spatial size divided by 8 (256 -> 32,
            # attention at 32/16/8 -> 4/2/1), so b=19 is the middle block and b=24 is
            # output_blocks[4] in the second decoder level, as in the paper's model
            image_size=32,
            in_channels=1,
            num_channels=32,
            num_res_blocks=2,
            channel_mult=(1, 1, 2, 2, 4, 4),
            attention_resolutions=(4, 2, 1),
            num_head_channels=16,
            learn_sigma=False,
            checkpoint="extract/weights/demo-fmnist.pt",
            shipped=True,
        ),
    ]
}


def get_preset(name: str) -> ModelPreset:
    """Look a preset up by name; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
