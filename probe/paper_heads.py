"""The heads of the paper's released code (diffssl), as it builds them, for the `paper-*` names.

Read from diffssl's `ssl_diff/attention_fusion.py`, `ssl_diff/attention_head.py` and
`ssl_diff/head.py`; differences from diffprobe's own heads are on purpose, so that a run
can reproduce the paper's numbers:

- attention: per sample, adaptive average pool to min(size, `prepool`) (16 in the paper),
  LayerNorm over the whole (C, s, s) map, a 1x1 convolution from C to `width` channels
  (always, even when C equals width), the s*s positions as tokens, a zero-initialised CLS
  token, `depth` pre-norm blocks (LayerNorm, `heads`-head self-attention with a bias-free qkv
  projection and a biased output projection, LayerNorm, GELU MLP of `mlp_ratio` x width), the
  CLS output straight into a linear classifier: no position embeddings, no final norm.
- mlp: Linear -> ReLU per hidden size, then a linear classifier (no BatchNorm).

Inputs are (N, C, h, w) maps of one feature set (square maps).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(n, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, per head
        return self.proj(out.transpose(1, 2).reshape(n, tokens, width))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PaperAttentionHead(nn.Module):
    """diffssl's attention head for one block at one t (see the module docstring)."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        classes: int,
        width: int = 1024,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        depth: int = 2,
        prepool: int = 16,
    ):
        super().__init__()
        channels, h, w = in_shape
        if h != w:
            raise ValueError(f"paper-attention takes square maps, got {h}x{w}")
        if width % heads:
            raise ValueError(f"paper-attention: width {width} is not divisible by heads {heads}")
        size = min(h, prepool)
        self.pre = nn.Sequential(
            nn.AdaptiveAvgPool2d(size), nn.LayerNorm([channels, size, size]), nn.Conv2d(channels, width, 1)
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(depth))
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.pre(x).flatten(2).transpose(1, 2)  # (N, s*s, width)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.fc(tokens[:, 0])


class PaperMLPHead(nn.Module):
    """diffssl's `--head_arc h1_h2` head: Linear -> ReLU per hidden size, then linear."""

    def __init__(self, in_shape: tuple[int, int, int], classes: int, hidden: tuple[int, ...] = (1024,)):
        super().__init__()
        dims = [in_shape[0] * in_shape[1] * in_shape[2], *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.fc = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.fc(x)


class PaperFusionHead(nn.Module):
    """diffssl's fusion (DifFormer, `fusion.sh`) over a feature set of several (t, b):

    each block b has its own pre-layer (pool to min(size, `prepool`), LayerNorm of the map, 1x1
    conv to `width`), shared by every t; within one t the tokens of all its blocks form one
    sequence for the attention blocks (one set of blocks and one CLS token, shared by the t's);
    the CLS outputs of the t's, in increasing t, are concatenated into a linear classifier.

    `parts` ((t, b, C, h, w) per key, in the feature set's order) is filled in by the grid from
    the store; the input is the feature set's concatenation, (N, sum C, h, w) or (N, D, 1, 1)."""

    takes_parts = True

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        classes: int,
        parts: tuple[tuple[int, ...], ...] = (),
        width: int = 1024,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        depth: int = 2,
        prepool: int = 16,
    ):
        super().__init__()
        if not parts:
            raise ValueError("paper-fusion needs the feature set's parts (t, b, C, h, w)")
        if width % heads:
            raise ValueError(f"paper-fusion: width {width} is not divisible by heads {heads}")
        self.parts = tuple(tuple(int(v) for v in p) for p in parts)
        self.ts = sorted({p[0] for p in self.parts})
        pre = {}
        for t, b, c, h, w in self.parts:
            if h != w:
                raise ValueError(f"paper-fusion takes square maps, got {h}x{w} at b={b}")
            size = min(h, prepool)
            layer = nn.Sequential(
                nn.AdaptiveAvgPool2d(size), nn.LayerNorm([c, size, size]), nn.Conv2d(c, width, 1)
            )
            if str(b) in pre and pre[str(b)][1].normalized_shape != (c, size, size):
                raise ValueError(f"paper-fusion: block {b} has two shapes in this feature set")
            pre.setdefault(str(b), layer)
        self.pre = nn.ModuleDict(pre)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(depth))
        self.fc = nn.Linear(width * len(self.ts), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        sizes = [c * h * w for _, _, c, h, w in self.parts]
        maps = [
            v.reshape(len(x), c, h, w) for v, (_, _, c, h, w) in zip(flat.split(sizes, dim=1), self.parts)
        ]
        outs = []
        for t in self.ts:
            tokens = [
                self.pre[str(b)](m).flatten(2).transpose(1, 2)
                for m, (pt, b, *_) in zip(maps, self.parts)
                if pt == t
            ]
            seq = torch.cat([self.cls.expand(len(x), -1, -1), *tokens], dim=1)
            for block in self.blocks:
                seq = block(seq)
            outs.append(seq[:, 0])
        return self.fc(torch.cat(outs, dim=1))
