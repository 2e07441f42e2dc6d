"""Many plain linear heads on one feature set, trained as one tensor.

M heads of K classes over D features are one (M, K, D) weight: the forward is a single
matrix product with M*K outputs and the loss one cross-entropy over (n*M, K) rows. On a CPU
this removes the per-head overhead that otherwise dominates a grid of small heads (16
skinny products and losses per batch).

The optimizer is a stock torch one with a parameter group per head (its own lr and weight
decay). For that each head also has leaf tensors of its own, (K, D) and (K,), that share
the bank's storage: the optimizer updates them in place, which updates the bank, and
`share_grads` makes their gradients views of the bank's gradient, so nothing is copied.
"""

from __future__ import annotations

import torch
from torch import nn

from probe.heads import LinearHead


class LinearBank(nn.Module):
    def __init__(self, heads: list[LinearHead]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([h.fc.weight.detach().clone() for h in heads]))  # (M, K, D)
        self.bias = nn.Parameter(torch.stack([h.fc.bias.detach().clone() for h in heads]))  # (M, K)
        # not registered: DDP, state_dict and .parameters() see the bank's two tensors only
        self.head_tensors = [self._views(i) for i in range(len(heads))]

    def _views(self, i: int) -> tuple[nn.Parameter, nn.Parameter]:
        """Head i's weight (K, D) and bias (K,): leaves over the bank's storage."""
        return nn.Parameter(self.weight.detach()[i]), nn.Parameter(self.bias.detach()[i])

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

    def share_grads(self) -> None:
        """Point each head's gradients at its slice of the bank's (after backward)."""
        for i, (w, b) in enumerate(self.head_tensors):
            if w.data_ptr() != self.weight[i].data_ptr():
                # .to() after building gives the bank new storage the optimizer never sees
                raise RuntimeError("the linear bank was moved after it was built; build it on its device")
            w.grad = None if self.weight.grad is None else self.weight.grad[i]
            b.grad = None if self.bias.grad is None else self.bias.grad[i]

    def export(self, i: int, in_shape: tuple[int, int, int]) -> LinearHead:
        """Head i as a standalone LinearHead (what is saved and re-evaluated)."""
        head = LinearHead(in_shape, self.weight.shape[1])
        head.fc.weight.data.copy_(self.weight.detach()[i])
        head.fc.bias.data.copy_(self.bias.detach()[i])
        return head.eval()
