"""Classification heads over cached features, in a registry: name -> factory.

Every factory takes the input shape (C, h, w) (the keys' channels concatenated; flat
heads see C*h*w features), the number of classes and keyword options, and returns an
nn.Module mapping (N, C, h, w) float32 to (N, classes) logits. Heads use no dropout, so
a head's training depends only on its own seed and the batch stream.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from probe.paper_heads import PaperAttentionHead, PaperFusionHead, PaperMLPHead


class LinearHead(nn.Module):
    """Flatten, optionally BatchNorm without affine parameters (MAE's linear probe), linear."""

    def __init__(self, in_shape: tuple[int, int, int], classes: int, batchnorm: bool = False):
        super().__init__()
        dim = in_shape[0] * in_shape[1] * in_shape[2]
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if batchnorm else nn.Identity()
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.flatten(1)))


class MLPHead(nn.Module):
    """Flatten, then Linear -> BatchNorm -> ReLU for each hidden size, then a linear classifier."""

    def __init__(self, in_shape: tuple[int, int, int], classes: int, hidden: tuple[int, ...] = (1024,)):
        super().__init__()
        dims = [in_shape[0] * in_shape[1] * in_shape[2], *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x.flatten(1)))


class CNNHead(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU layers over the p x p map, global average pool, linear."""

    def __init__(self, in_shape: tuple[int, int, int], classes: int, channels: tuple[int, ...] = (256, 256)):
        super().__init__()
        dims = [in_shape[0], *channels]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


class AttentionHead(nn.Module):
    """Transformer blocks over the h*w tokens plus a CLS token; classify the CLS output.

    Tokens are projected from C to `width` when they differ; learned position embeddings;
    pre-norm blocks (LayerNorm, `heads`-head self-attention, MLP of `mlp_ratio` x width).
    `token_side` caps the tokens at token_side x token_side: a larger map is cut into square
    patches of ceil(side / token_side) (zero-padded at the right and bottom), each patch one
    token of C * patch^2 values, as a ViT cuts an image. Unlike average pooling it drops no
    value, and attention's cost falls with the square of the token count (a 32x32 map is 1,024
    tokens; capped at 8, 64)."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        classes: int,
        width: int = 1024,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        depth: int = 2,
        token_side: int | None = None,
    ):
        super().__init__()
        channels, h, w = in_shape
        if width % heads:
            raise ValueError(f"attention head: width {width} is not divisible by heads {heads}")
        if token_side is not None and token_side < 1:
            raise ValueError(f"attention head: token_side must be at least 1, got {token_side}")
        self.patch = 1 if token_side is None else max(-(-h // token_side), -(-w // token_side), 1)
        rows, cols, token_dim = -(-h // self.patch), -(-w // self.patch), channels * self.patch**2
        self.proj = nn.Linear(token_dim, width) if token_dim != width else nn.Identity()
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, rows * cols + 1, width) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width,
                heads,
                int(width * mlp_ratio),
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, rows * cols, C * patch^2): one token per patch, row-major."""
        if self.patch == 1:
            return x.flatten(2).transpose(1, 2)
        p = self.patch
        x = nn.functional.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p))
        return nn.functional.unfold(x, kernel_size=p, stride=p).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(self.tokens(x))  # (N, tokens, width)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.fc(self.norm(tokens[:, 0]))


HEADS: dict[str, Callable[..., nn.Module]] = {
    "linear": LinearHead,
    "mlp": MLPHead,
    "cnn": CNNHead,
    "attention": AttentionHead,
    # the paper's released code's own heads (probe/paper_heads.py)
    "paper-attention": PaperAttentionHead,
    "paper-mlp": PaperMLPHead,
    "paper-fusion": PaperFusionHead,
}

# the two references that are not trained by gradient descent (probe/baselines.py)
BASELINES = ("logreg", "knn")

# option parsers: `--head-opt hidden=512,512` -> {"hidden": (512, 512)}
_OPTION_TYPES: dict[str, Callable[[str], object]] = {
    "batchnorm": lambda s: s.lower() in ("1", "true", "yes", "on"),
    "hidden": lambda s: tuple(int(v) for v in s.split(",") if v),
    "channels": lambda s: tuple(int(v) for v in s.split(",") if v),
    "width": int,
    "heads": int,
    "depth": int,
    "mlp_ratio": float,
    "prepool": int,
    "token_side": int,
}


def parse_head_options(pairs: tuple[str, ...] | list[str]) -> dict[str, object]:
    """['width=256', 'depth=1'] -> {'width': 256, 'depth': 1}; unknown names are an error."""
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in _OPTION_TYPES:
            raise ValueError(
                f"head option {pair!r}: expected NAME=VALUE with NAME one of {', '.join(_OPTION_TYPES)}"
            )
        try:
            out[name] = _OPTION_TYPES[name](value.strip())
        except ValueError:
            raise ValueError(f"head option {pair!r}: cannot parse {value!r}") from None
    return out


def takes_parts(name: str) -> bool:
    """Heads that split a feature set back into its keys (they are given `parts`)."""
    return bool(getattr(HEADS.get(name), "takes_parts", False))


def build_head(
    name: str, in_shape: tuple[int, int, int], classes: int, options: dict | None = None
) -> nn.Module:
    """The registered head; an unknown name or an option the head does not take is a clear error."""
    try:
        factory = HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; choose one of: {', '.join([*HEADS, *BASELINES])}") from None
    try:
        return factory(tuple(in_shape), classes, **(options or {}))
    except TypeError as e:
        raise ValueError(f"head {name!r} does not take these options {sorted(options or {})}: {e}") from None
