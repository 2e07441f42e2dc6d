"""Many plain linear heads on one feature set, trained as one tensor.

M heads of K classes over D features are one (M, K, D) weight: the forward is a single
matrix product with M*K outputs, the loss one cross-entropy over (n*M, K) rows, and the
optimizer step one vectorised update with a per-head learning rate and weight decay.
On a CPU this removes the per-head overhead that otherwise dominates a grid of small
heads (16 skinny products, losses and optimizer steps per batch). The update rules are
PyTorch's SGD (momentum, coupled weight decay) and AdamW (decoupled weight decay).
"""

from __future__ import annotations

import torch
from torch import nn

from probe.heads import LinearHead


class LinearBank(nn.Module):
    def __init__(self, heads: list[LinearHead], lrs: list[float], wds: list[float], optimizer: str, momentum: float = 0.9, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([h.fc.weight.detach().clone() for h in heads]))  # (M, K, D)
        self.bias = nn.Parameter(torch.stack([h.fc.bias.detach().clone() for h in heads]))  # (M, K)
        self.register_buffer("lrs", torch.tensor(lrs, dtype=torch.float32))
        self.register_buffer("wds", torch.tensor(wds, dtype=torch.float32))
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"linear bank: unknown optimizer {optimizer!r}")
        self.optimizer, self.momentum, self.betas, self.eps = optimizer, momentum, betas, eps
        self.state_: dict[str, torch.Tensor] = {}
        self.steps = 0

    @property
    def members(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, D...) -> logits (n, M, K)."""
        m, k, d = self.weight.shape
        return nn.functional.linear(x.flatten(1), self.weight.reshape(m * k, d), self.bias.reshape(m * k)).view(-1, m, k)

    def loss(self, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The sum over heads of each head's mean cross-entropy."""
        logits = self(x)
        n, m, k = logits.shape
        total = nn.functional.cross_entropy(logits.reshape(n * m, k), y.repeat_interleave(m), reduction="sum", label_smoothing=label_smoothing)
        return total / n

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in (self.weight, self.bias):
            p.grad = None

    @torch.no_grad()
    def step(self, factor: float) -> None:
        """One update of every head with lr = its base lr x factor. Per-head scalars are
        applied slice by slice with fused in-place ops, so each step makes a few passes over
        the (M, K, D) tensors and allocates one temporary (AdamW's denominator)."""
        self.steps += 1
        lrs = [float(lr) * factor for lr in self.lrs.tolist()]
        wds = self.wds.tolist()
        for name, p in (("weight", self.weight), ("bias", self.bias)):
            if p.grad is None:
                continue
            g = p.grad
            if self.optimizer == "sgd":
                if any(wds):
                    g = g.clone()
                    for i, wd in enumerate(wds):
                        if wd:
                            g[i].add_(p[i], alpha=wd)
                if self.momentum:
                    buf = self.state_.get(name)
                    g = self.state_[name] = g.clone() if buf is None else buf.mul_(self.momentum).add_(g)
                for i, lr in enumerate(lrs):
                    p[i].add_(g[i], alpha=-lr)
            else:
                b1, b2 = self.betas
                m = self.state_.setdefault(name + ".m", torch.zeros_like(p))
                v = self.state_.setdefault(name + ".v", torch.zeros_like(p))
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1, bc2 = 1 - b1**self.steps, 1 - b2**self.steps
                denom = v.sqrt().div_(bc2**0.5).add_(self.eps)
                for i, (lr, wd) in enumerate(zip(lrs, wds)):
                    if wd:
                        p[i].mul_(1 - lr * wd)
                    p[i].addcdiv_(m[i], denom[i], value=-lr / bc1)

    def export(self, i: int, in_shape: tuple[int, int, int]) -> LinearHead:
        """Head i as a standalone LinearHead (what is saved and re-evaluated)."""
        head = LinearHead(in_shape, self.weight.shape[1])
        head.fc.weight.data.copy_(self.weight.detach()[i])
        head.fc.bias.data.copy_(self.bias.detach()[i])
        return head.eval()
