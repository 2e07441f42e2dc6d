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
    BLOCK = (
        1 << 22
    )  # elements per block of the update (_blocks): 16 MiB of float32, one ImageNet head (1000 x 4096)
    BLOCKED_ON = (
        "cpu",
    )  # device types whose update goes in cache-sized blocks, per-head scalars as a column

    def __init__(
        self,
        heads: list[LinearHead],
        lrs: list[float],
        wds: list[float],
        optimizer: str,
        momentum: float = 0.9,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
    ):
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
        self.scratch_: torch.Tensor | None = None  # the update's per-block temporary

    @property
    def members(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, D...) -> logits (n, M, K)."""
        m, k, d = self.weight.shape
        return nn.functional.linear(
            x.flatten(1), self.weight.reshape(m * k, d), self.bias.reshape(m * k)
        ).view(-1, m, k)

    def loss(self, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The sum over heads of each head's mean cross-entropy."""
        logits = self(x)
        n, m, k = logits.shape
        total = nn.functional.cross_entropy(
            logits.reshape(n * m, k), y.repeat_interleave(m), reduction="sum", label_smoothing=label_smoothing
        )
        return total / n

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in (self.weight, self.bias):
            p.grad = None

    def _blocks(self, p: torch.Tensor) -> list[tuple[int, int, int, int]]:
        """(first member, end member, first column, end column) of each block of p viewed as
        (M, N). On a CPU (BLOCKED_ON): all of it when small, else groups of whole members, else
        column ranges of one member (a multiple of 64 columns, at least 64), each at most about
        BLOCK elements, so that the update's passes over a block find it in cache. BLOCK is
        large (one ImageNet head): smaller blocks did no better with one thread, and with two,
        thousands of small parallel ops per step stall on a busy machine. Elsewhere (a GPU: a
        launch per op, no such cache): all of it."""
        m, n = p.shape[0], p[0].numel()
        if m * n <= self.BLOCK or p.device.type not in self.BLOCKED_ON:
            return [(0, m, 0, n)]
        if n <= self.BLOCK:
            per = self.BLOCK // n
            return [(a, min(a + per, m), 0, n) for a in range(0, m, per)]
        cols = max(64, self.BLOCK // 64 * 64)
        return [(i, i + 1, c, min(c + cols, n)) for i in range(m) for c in range(0, n, cols)]

    def _scratch(self, p: torch.Tensor, elements: int) -> torch.Tensor:
        s = self.scratch_
        if s is None or s.numel() < elements or s.device != p.device or s.dtype != p.dtype:
            s = self.scratch_ = torch.empty(elements, dtype=p.dtype, device=p.device)
        return s

    @torch.no_grad()
    def step(self, factor: float) -> None:
        """One update of every head with lr = its base lr x factor, block by block (_blocks),
        per-head scalars applied slice by slice with fused in-place ops (or, for a block of
        several heads on a CPU, as a column). Elementwise, the ops and their order are those of
        PyTorch's SGD and AdamW, so the blocking changes no bit; after the first step nothing
        of the size of p is allocated (the state persists, the temporaries use one scratch)."""
        self.steps += 1
        lrs = [float(lr) * factor for lr in self.lrs.tolist()]
        wds = self.wds.tolist()
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.steps, 1 - b2**self.steps
        for name, p in (("weight", self.weight), ("bias", self.bias)):
            if p.grad is None:
                continue
            blocks = self._blocks(p)
            m_, n = p.shape[0], p[0].numel()
            pf, gf = p.view(m_, n), p.grad.view(m_, n)
            scratch = self._scratch(p, 2 * max((b - a) * (d - c) for a, b, c, d in blocks))
            if self.optimizer == "sgd":
                first = name not in self.state_
                if self.momentum and first:
                    self.state_[name] = torch.empty_like(p)
                buf = self.state_[name].view(m_, n) if self.momentum else None
                for a, b, c, d in blocks:
                    pb, gb = pf[a:b, c:d], gf[a:b, c:d]
                    if any(wds[a:b]):
                        gb = scratch[: gb.numel()].view(gb.shape).copy_(gb)
                        for i in range(a, b):
                            if wds[i]:
                                gb[i - a].add_(pb[i - a], alpha=wds[i])
                    if buf is not None:
                        gb = buf[a:b, c:d].copy_(gb) if first else buf[a:b, c:d].mul_(self.momentum).add_(gb)
                    for i in range(a, b):
                        pb[i - a].add_(gb[i - a], alpha=-lrs[i])
            else:
                if name + ".m" not in self.state_:
                    self.state_[name + ".m"], self.state_[name + ".v"] = (
                        torch.zeros_like(p),
                        torch.zeros_like(p),
                    )
                mf, vf = self.state_[name + ".m"].view(m_, n), self.state_[name + ".v"].view(m_, n)
                for a, b, c, d in blocks:
                    pb, gb, mb, vb = pf[a:b, c:d], gf[a:b, c:d], mf[a:b, c:d], vf[a:b, c:d]
                    mb.lerp_(gb, 1 - b1)
                    vb.mul_(b2).addcmul_(gb, gb, value=1 - b2)
                    denom = (
                        torch.sqrt(vb, out=scratch[: vb.numel()].view(vb.shape)).div_(bc2**0.5).add_(self.eps)
                    )
                    if (
                        b - a == 1 or p.device.type not in self.BLOCKED_ON
                    ):  # off a CPU: no host-to-device copy of the scalars
                        for i in range(a, b):
                            if wds[i]:
                                pb[i - a].mul_(1 - lrs[i] * wds[i])
                            pb[i - a].addcdiv_(mb[i - a], denom[i - a], value=-lrs[i] / bc1)
                        continue
                    # several heads on a CPU: their scalars as a (heads, 1) column, one op per
                    # pass. The arithmetic is addcdiv's, p + (value * m) / denom, rounded at the
                    # same steps; a head without weight decay is multiplied by exactly 1
                    column = lambda values: torch.tensor(values, dtype=p.dtype, device=p.device).unsqueeze(1)  # noqa: E731
                    if any(wds[a:b]):
                        pb.mul_(column([1 - lr * wd for lr, wd in zip(lrs[a:b], wds[a:b])]))
                    update = torch.mul(
                        mb,
                        column([-lr / bc1 for lr in lrs[a:b]]),
                        out=scratch[vb.numel() : 2 * vb.numel()].view(vb.shape),
                    )
                    pb.add_(update.div_(denom))

    def export(self, i: int, in_shape: tuple[int, int, int]) -> LinearHead:
        """Head i as a standalone LinearHead (what is saved and re-evaluated)."""
        head = LinearHead(in_shape, self.weight.shape[1])
        head.fc.weight.data.copy_(self.weight.detach()[i])
        head.fc.bias.data.copy_(self.bias.detach()[i])
        return head.eval()
