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
    make = {
        "sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, weight_decay=wd, momentum=0.9),
        "adamw": lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd),
    }[optimizer]
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


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("block", [16, 64, 1 << 22])
def test_blocked_update_is_bitwise_the_whole_tensor_update(optimizer, block):
    """On a CPU the update goes block by block: column ranges of one head, groups of heads or
    all of it (per-head scalars as a column). Every blocking gives the same bits as block 1
    (one head at a time, in ranges of 64 columns), and so does the GPU's way (all of it, the
    scalars head by head). 6 heads of 5 classes over 84 features: at block 16 the weight goes
    in 7 ranges per head and the bias in groups of 3 heads."""
    torch.manual_seed(0)
    refs = [LinearHead((7, 3, 4), 5) for _ in range(6)]
    lrs, wds = [0.1, 0.01, 0.05, 0.02, 0.003, 0.2], [0.0, 1e-2, 1e-3, 0.0, 0.0, 1e-1]
    banks = [LinearBank(refs, lrs, wds, optimizer, momentum=0.9) for _ in range(3)]
    banks[0].BLOCK, banks[1].BLOCK = 1, block
    banks[2].BLOCKED_ON = ()  # as on a GPU: all of it in one block, the scalars head by head
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        x, y = torch.randn(8, 7, 3, 4, generator=gen), torch.randint(0, 5, (8,), generator=gen)
        for bank in banks:
            loss = bank.loss(x, y)
            bank.zero_grad()
            loss.backward()
            bank.step(1.0 - 0.1 * step)
    assert [len(b._blocks(b.weight)) for b in banks] == [42, {16: 42, 64: 42, 1 << 22: 1}[block], 1]
    assert [len(b._blocks(b.bias)) for b in banks] == [6, {16: 2, 64: 1, 1 << 22: 1}[block], 1]
    for other in banks[1:]:
        assert torch.equal(banks[0].weight, other.weight) and torch.equal(banks[0].bias, other.bias)
