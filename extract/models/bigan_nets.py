"""A DCGAN-style BiGAN (Donahue et al. 2017; ALI, Dumoulin et al. 2017) for 32x32 grayscale
images in [-1, 1]: the GAN baseline whose encoder features are probed like a U-Net's.

- generator G(z): z (N, z_dim) -> 4x4 -> 8x8 -> 16x16 -> 32x32 by transposed convolutions,
  BatchNorm + ReLU between them, tanh at the end;
- encoder E(x): 32 -> 16 -> 8 -> 4 by stride-2 convolutions (BatchNorm after all but the
  first, LeakyReLU 0.2), then a linear map to z; deterministic (no sampling in E);
- discriminator D(x, z): a conv trunk on x, an MLP on z, a joint MLP on their concatenation
  giving one logit. For stability D has no BatchNorm (its batches are all-real or all-fake
  pairs) and dropout 0.2 in the joint MLP and after the z MLP, as ALI's discriminator does;
  no spectral norm.

The three nets live in one `BiGAN` module, so one state_dict (keys `generator.`, `encoder.`,
`discriminator.`) holds a whole model; its sizes (z_dim, width) are read back from the shapes.
The encoder's "blocks" (what a feature store keys as b) are its stages: b=1..3 the outputs of
the three conv stages (width x 16x16, 2*width x 8x8, 4*width x 4x4), b=4 the code z as a 1x1 map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from extract.models.weights import CheckpointError, read_state_dict

IMAGE_SIZE, CHANNELS = 32, 1


@dataclass(frozen=True)
class BiganArch:
    z_dim: int = 64
    width: int = 64  # channels of G's last and E's first stage; the others are 2x and 4x
    d_width: int = 32  # the same for D's conv trunk
    d_hidden: int = 512  # joint MLP width (the z MLP is half of it)
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


class Generator(nn.Module):
    def __init__(self, a: BiganArch):
        super().__init__()
        w = a.width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(a.z_dim, 4 * w, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),  # 1 -> 4
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),  # 4 -> 8
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),  # 8 -> 16
            nn.ConvTranspose2d(w, CHANNELS, 4, 2, 1),
            nn.Tanh(),  # 16 -> 32
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Encoder(nn.Module):
    """stages[0..2]: the conv stages (blocks 1..3); head: flatten + linear to z (block 4)."""

    def __init__(self, a: BiganArch):
        super().__init__()
        w = a.width
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(CHANNELS, w, 4, 2, 1), _lrelu()),  # 32 -> 16
                nn.Sequential(
                    nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), _lrelu()
                ),  # 16 -> 8
                nn.Sequential(
                    nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w), _lrelu()
                ),  # 8 -> 4
            ]
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 4 * 4, a.z_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def blocks(self) -> list[nn.Module]:
        """The modules whose outputs are blocks 1..4 (block 4's output is (N, z_dim))."""
        return [*self.stages, self.head]


class Discriminator(nn.Module):
    def __init__(self, a: BiganArch):
        super().__init__()
        w, h = a.d_width, a.d_hidden
        self.x_net = nn.Sequential(
            nn.Conv2d(CHANNELS, w, 4, 2, 1),
            _lrelu(),  # 32 -> 16
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            _lrelu(),  # 16 -> 8
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1),
            _lrelu(),  # 8 -> 4
            nn.Flatten(),
        )
        self.z_net = nn.Sequential(
            nn.Linear(a.z_dim, h // 2), _lrelu(), nn.Linear(h // 2, h // 2), _lrelu(), nn.Dropout(a.dropout)
        )
        self.joint = nn.Sequential(
            nn.Dropout(a.dropout),
            nn.Linear(4 * w * 16 + h // 2, h),
            _lrelu(),
            nn.Dropout(a.dropout),
            nn.Linear(h, 1),
        )

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One logit per (x, z) pair: high for (x, E(x)), low for (G(z), z)."""
        return self.joint(torch.cat([self.x_net(x), self.z_net(z)], dim=1)).squeeze(1)


class BiGAN(nn.Module):
    def __init__(self, arch: BiganArch = BiganArch()):
        super().__init__()
        self.arch = arch
        self.generator, self.encoder, self.discriminator = Generator(arch), Encoder(arch), Discriminator(arch)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: BiGAN) -> dict[str, int]:
    parts = {"generator": model.generator, "encoder": model.encoder, "discriminator": model.discriminator}
    return {**{k: count(v) for k, v in parts.items()}, "total": count(model)}


def arch_of(state: dict[str, torch.Tensor]) -> BiganArch:
    """The architecture a BiGAN state_dict was made with, read from its shapes."""
    try:
        width = state["encoder.stages.0.0.weight"].shape[0]
        z_dim = state["encoder.head.1.weight"].shape[0]
        d_width = state["discriminator.x_net.0.weight"].shape[0]
        d_hidden = state["discriminator.joint.1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not BiGAN weights (no {e.args[0]})") from None
    return BiganArch(z_dim=int(z_dim), width=int(width), d_width=int(d_width), d_hidden=int(d_hidden))


def load_bigan(path: str | Path) -> BiGAN:
    """A BiGAN (eval mode) from an exported weights file (weights-only loading); a missing or
    foreign file is one CheckpointError / FileNotFoundError line."""
    state = read_state_dict(path)
    try:
        model = BiGAN(arch_of(state))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise CheckpointError(f"{path}: does not fit the BiGAN ({str(e).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not fit the BiGAN: {len(missing)} missing keys, {len(unexpected)} unexpected keys"
        )
    return model.float().eval()
