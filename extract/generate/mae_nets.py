"""The masked autoencoder trained here (extract.generate.mae_train): a timm VisionTransformer as
its encoder, built by the timm family's own builder from a `timm:NAME` and `--model-arg` words, so
the encoder's state_dict is exactly what `extract run --model timm:NAME --model-arg ... --ckpt`
loads; and a light decoder of timm transformer blocks.

As in MAE (He et al. 2022): the image is cut into p x p patches, a random 75% of them are dropped
before the encoder (which sees the class token and the visible patches, with their position
embeddings), the decoder gets the encoded tokens back in place with a shared mask token at every
dropped position, and the loss is the mean squared error on the dropped patches only, against
each patch's pixels normalised by the patch's own mean and variance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from extract.models import timm_build
from extract.models.timm_options import TimmOptions, TimmSpec, timm_spec

# the encoder the shipped weights use: timm's ViT-Tiny width (192, 3 heads) at 6 blocks, 4x4
# patches of a 32x32 image (64 tokens), no classifier head (num_classes=0: no head in the state)
ENCODER = "timm:vit_tiny_patch16_224"
ENCODER_ARGS = ("img_size=32", "patch_size=4", "depth=6", "num_classes=0")


@dataclass(frozen=True)
class MaeArch:
    encoder: str = ENCODER
    encoder_args: tuple[str, ...] = ENCODER_ARGS
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    def spec(self) -> TimmSpec:
        return timm_spec(self.encoder, TimmOptions(model_args=tuple(self.encoder_args)))

    def to_dict(self) -> dict:
        return {**asdict(self), "encoder_args": list(self.encoder_args)}


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, p*p*C), L = (H/p)(W/p) in row-major patch order (the encoder's token
    order), each patch's values as (row, col, channel)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def random_masking(n: int, length: int, keep: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Which `keep` of `length` tokens each image keeps, drawn from `gen`: (ids_keep (N, keep),
    ids_restore (N, L)), ids_restore putting [kept, dropped] back in token order."""
    shuffle = torch.argsort(torch.rand(n, length, generator=gen), dim=1)
    return shuffle[:, :keep], torch.argsort(shuffle, dim=1)


class MAE(nn.Module):
    """encoder: the timm ViT (its state_dict is the shipped file); the rest is the decoder."""

    def __init__(self, arch: MaeArch):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.arch = arch
        self.encoder = timm_build.build(arch.spec()).train()
        enc = self.encoder
        if enc.cls_token is None or enc.no_embed_class or enc.num_prefix_tokens != 1 or enc.pos_embed is None:
            raise ValueError(
                f"{arch.encoder}: the MAE needs a ViT with one class token and a learned pos_embed"
            )
        self.patch = enc.patch_embed.patch_size[0]
        self.tokens = enc.patch_embed.num_patches
        dim, ddim = enc.embed_dim, arch.decoder_dim
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, 1 + self.tokens, ddim))
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)
        self.decoder_blocks = nn.ModuleList(
            Block(ddim, arch.decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(arch.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(ddim)
        self.decoder_pred = nn.Linear(ddim, self.patch * self.patch * enc.patch_embed.proj.in_channels)

    def encode(self, x: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """x (N, 3, H, W) -> (N, 1 + K, D): the class token and the kept patches (all L when
        ids_keep is None), through the blocks and the final norm; timm's own forward_features
        with nothing dropped."""
        enc = self.encoder
        tokens = enc.patch_embed(x) + enc.pos_embed[:, 1:]  # (N, L, D)
        if ids_keep is not None:
            tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(len(x), -1, -1)
        h = enc.norm_pre(enc.patch_drop(enc.pos_drop(torch.cat([cls, tokens], dim=1))))
        return enc.norm(enc.blocks(h))

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (N, 1 + K, D), ids_restore (N, L) -> each patch's predicted pixels (N, L, p*p*C)."""
        h = self.decoder_embed(latent)
        n, length = ids_restore.shape
        masks = self.mask_token.expand(n, length - (h.shape[1] - 1), -1)
        patches = torch.cat([h[:, 1:], masks], dim=1)
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, h.shape[-1]))
        h = torch.cat([h[:, :1], patches], dim=1) + self.decoder_pos
        for block in self.decoder_blocks:
            h = block(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:]

    def loss(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """x (N, 3, H, W) -> the MAE loss on the dropped patches (masking drawn from `gen`) and
        the loss on the kept ones (for the log)."""
        keep = int(self.tokens * (1 - self.arch.mask_ratio))
        ids_keep, ids_restore = random_masking(len(x), self.tokens, keep, gen)
        ids_keep, ids_restore = ids_keep.to(x.device), ids_restore.to(x.device)
        pred = self.decode(self.encode(x, ids_keep), ids_restore)
        target = patchify(x, self.patch)
        if self.arch.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred - target).pow(2).mean(dim=-1)  # (N, L)
        dropped = torch.ones_like(per_patch).scatter_(1, ids_keep, 0.0)
        loss = (per_patch * dropped).sum() / dropped.sum()
        with torch.no_grad():
            seen = ((per_patch * (1 - dropped)).sum() / (1 - dropped).sum()).item()
        return loss, {"loss": loss.item(), "loss_visible": seen}


def parameter_counts(model: MAE) -> dict[str, int]:
    enc = sum(p.numel() for p in model.encoder.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"encoder": enc, "decoder": total - enc, "total": total}
