"""The linear bank and the grid's stock optimizer against plain torch, head by head."""

from __future__ import annotations

import copy

import pytest
import torch

from extract.store.schema import FeatureKey
from probe.bank import LinearBank
from probe.grid import Grid, MemberSpec, TrainSettings, feature_set
from probe.heads import LinearHead

KEY = FeatureKey(10, 3, 1)
LRS, WDS = [0.1, 0.01, 0.05], [0.0, 1e-2, 1e-3]


def heads(n: int) -> list[LinearHead]:
    torch.manual_seed(0)
    return [LinearHead((6, 2, 1), 5) for _ in range(n)]


def plain_optimizer(name: str, head: LinearHead, lr: float, wd: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(head.parameters(), lr=lr, weight_decay=wd, momentum=0.9)
    return torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)


def check_bank_against_plain_torch(optimizer: str, device: str) -> None:
    """Same init, same batches, same lr schedule: the grid (one bank, a parameter group per
    head, fused kernels) against each head trained by itself by a plain torch loop."""
    refs = [h.to(device) for h in heads(3)]
    fs = feature_set((KEY,), {KEY: (6, 2, 1)})
    specs = [MemberSpec("linear", (), fs, lr, wd) for lr, wd in zip(LRS, WDS)]
    settings = TrainSettings(optimizer=optimizer, momentum=0.9)
    grid = Grid(specs, [fs], copy.deepcopy(refs), settings, device)
    assert len(grid.banks) == 1 and not grid.singles
    assert [(g["lr"], g["weight_decay"]) for g in grid.optimizer.param_groups] == list(zip(LRS, WDS))
    assert all(g["fused"] for g in grid.optimizer.param_groups)  # CPU and CUDA have fused kernels
    opts = [plain_optimizer(optimizer, h, lr, wd) for h, lr, wd in zip(refs, LRS, WDS)]
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        x, y = torch.randn(8, 6, 2, 1, generator=gen), torch.randint(0, 5, (8,), generator=gen)
        x, y = x.to(device), y.to(device)
        factor = 1.0 - 0.1 * step
        loss = grid([x], y)
        torch.testing.assert_close(loss, sum(torch.nn.functional.cross_entropy(h(x), y) for h in refs))
        grid.zero_grad_all()
        loss.backward()
        grid.step_all(factor)
        for h, opt, lr in zip(refs, opts, LRS):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(h(x), y).backward()
            opt.param_groups[0]["lr"] = lr * factor
            opt.step()
    bank = grid.banks[0]
    for i, h in enumerate(refs):
        torch.testing.assert_close(bank.weight[i], h.fc.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bank.bias[i], h.fc.bias, rtol=1e-5, atol=1e-6)
        x = torch.randn(4, 6, 2, 1, device=device)
        torch.testing.assert_close(grid.member(i)(x), bank(x)[:, i])
        assert not torch.equal(h.fc.weight.cpu(), heads(3)[i].fc.weight)  # it did train


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_head_trained_in_the_bank_matches_the_head_trained_alone(optimizer):
    check_bank_against_plain_torch(optimizer, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_head_trained_in_the_bank_on_a_gpu_matches_the_head_trained_alone(optimizer):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    check_bank_against_plain_torch(optimizer, "cuda")


def test_the_heads_tensors_are_the_banks_storage():
    bank = LinearBank(heads(2))
    w, b = bank.head_tensors[1]
    assert w.is_leaf and w.shape == (5, 12) and b.shape == (5,)
    with torch.no_grad():
        w.add_(1.0)
    assert torch.equal(bank.weight[1], w) and not torch.equal(bank.weight[0], w)
    bank.loss(torch.randn(4, 6, 2, 1), torch.tensor([0, 1, 2, 3])).backward()
    bank.share_grads()
    assert w.grad.data_ptr() == bank.weight.grad[1].data_ptr()  # a view, not a copy
    bank.weight.data = bank.weight.data.clone()  # what moving it to another device does
    with pytest.raises(RuntimeError, match="moved after it was built"):
        bank.share_grads()
