"""The linear bank against plain torch: logits, loss and the SGD/AdamW updates."""

from __future__ import annotations

import pytest
import torch

from probe.bank import LinearBank
from probe.heads import LinearHead


def heads(n: int) -> list[LinearHead]:
    torch.manual_seed(0)
    return [LinearHead((6, 2, 1), 5) for _ in range(n)]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_bank_updates_match_torch_optimizers_head_by_head(optimizer):
    refs = heads(3)
    lrs, wds = [0.1, 0.01, 0.05], [0.0, 1e-2, 1e-3]
    bank = LinearBank(refs, lrs, wds, optimizer, momentum=0.9)
    make = {"sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, weight_decay=wd, momentum=0.9),
            "adamw": lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd)}[optimizer]  # fmt: skip
    opts = [make(h.parameters(), lr, wd) for h, lr, wd in zip(refs, lrs, wds)]
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        x, y = torch.randn(8, 6, 2, 1, generator=gen), torch.randint(0, 5, (8,), generator=gen)
        factor = 1.0 - 0.1 * step
        loss = bank.loss(x, y)
        ref_loss = sum(torch.nn.functional.cross_entropy(h(x), y) for h in refs)
        torch.testing.assert_close(loss, ref_loss)
        bank.zero_grad()
        loss.backward()
        bank.step(factor)
        for h, opt, lr in zip(refs, opts, lrs):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(h(x), y).backward()
            opt.param_groups[0]["lr"] = lr * factor
            opt.step()
    for i, h in enumerate(refs):
        torch.testing.assert_close(bank.weight[i], h.fc.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bank.bias[i], h.fc.bias, rtol=1e-5, atol=1e-6)
        exported = bank.export(i, (6, 2, 1))
        x = torch.randn(4, 6, 2, 1)
        torch.testing.assert_close(exported(x), bank(x)[:, i])
