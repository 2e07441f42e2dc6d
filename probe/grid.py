"""Train a grid of heads in one pass over the cache: every batch read once feeds every member.

A member is (head, feature set, learning rate, weight decay). Each has its own module
and optimizer; the losses are summed and back-propagated once, which gives each member
exactly the gradient it would get alone (their parameters are disjoint). A member's
initialisation is seeded by (seed, head, options, feature set) only, so a member of a
grid trains to the same weights as the same member trained by itself.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from extract.store.progress import bar as progress_bar
from extract.store.progress import line as progress_line
from extract.store.schema import FeatureKey, feature_set_label
from probe.bank import LinearBank
from probe.config import TrainSettings  # noqa: F401 - the settings live with the other configs
from probe.heads import LinearHead, build_head, takes_parts
from probe.reader import Standardizer


@dataclass(frozen=True)
class FeatureSet:
    """Keys whose (standardized) features are concatenated into one head input."""

    keys: tuple[FeatureKey, ...]
    in_shape: tuple[int, int, int]  # (sum C, h, w), or (D, 1, 1) when the maps differ in size
    row_shapes: tuple[tuple[int, int, int], ...] = ()  # (C, h, w) of each key, in order

    @property
    def parts(self) -> tuple[tuple[int, ...], ...]:
        """(t, b, C, h, w) of each key: what fusion heads need to split the input back."""
        return tuple((k.t, k.b, *shape) for k, shape in zip(self.keys, self.row_shapes))

    @property
    def name(self) -> str:
        return feature_set_label(self.keys)

    @property
    def seed_tag(self) -> str:
        # the spelling heads were seeded with before labels were unified; kept so that the
        # same arguments still give the same heads
        return "+".join(f"t{k.t}b{k.b}p{'full' if k.pool is None else k.pool}" for k in self.keys)


def feature_set(keys: tuple[FeatureKey, ...], row_shapes: dict[FeatureKey, tuple[int, ...]]) -> FeatureSet:
    shapes = [tuple(row_shapes[k]) for k in keys]
    if len({s[1:] for s in shapes}) == 1:
        return FeatureSet(keys, (sum(s[0] for s in shapes), *shapes[0][1:]), tuple(shapes))
    return FeatureSet(keys, (sum(int(np.prod(s)) for s in shapes), 1, 1), tuple(shapes))


def head_for(name: str, fs: FeatureSet, classes: int, options: dict) -> nn.Module:
    """build_head, giving heads that split the feature set its parts."""
    extra = {"parts": fs.parts} if takes_parts(name) else {}
    return build_head(name, fs.in_shape, classes, {**options, **extra})


@dataclass(frozen=True)
class MemberSpec:
    head: str
    options: tuple[tuple[str, object], ...]  # sorted (name, value) pairs the head takes
    features: FeatureSet
    lr: float
    wd: float

    def describe(self) -> dict:
        return {
            "head": self.head,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options},
            "features": [k.to_dict() for k in self.features.keys],
            "feature_set": self.features.name,
            "lr": self.lr,
            "wd": self.wd,
        }


def member_seed(seed: int, spec: MemberSpec) -> int:
    text = f"diffprobe-head:{seed}:{spec.head}:{spec.options}:{spec.features.seed_tag}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & ((1 << 63) - 1)


def build_member(spec: MemberSpec, classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(member_seed(seed, spec))
        return head_for(spec.head, spec.features, classes, dict(spec.options))


# ---------------------------------------------------------------- optimisation
def _sgd(groups: list[dict], settings: TrainSettings, kernels: dict[str, bool]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, momentum=settings.momentum, **kernels)


def _adamw(groups: list[dict], settings: TrainSettings, kernels: dict[str, bool]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, **kernels)


# name -> factory(parameter groups, each with its own lr and weight_decay; settings; kernels)
OPTIMIZERS: dict[str, Callable[[list[dict], TrainSettings, dict[str, bool]], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
}


def optimizer_kernels(device: torch.device) -> dict[str, bool]:
    """fused=True where torch has fused optimizer kernels for the device type (one pass over
    each tensor), else foreach=True (a few ops over all tensors at once)."""
    # torch offers no public query; this is the list its own optimizers check fused= against
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return {"fused": True} if device.type in _get_fused_kernels_supported_devices() else {"foreach": True}


def _cosine(progress: float, epochs: int, step_epochs: int, gamma: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress))


def _step(progress: float, epochs: int, step_epochs: int, gamma: float) -> float:
    # the paper's linear head: lr divided by 10 every 7 of 28 epochs
    return gamma ** int(progress * epochs // step_epochs)


SCHEDULES: dict[str, Callable[[float, int, int, float], float]] = {"cosine": _cosine, "step": _step}


def lr_factor(s: TrainSettings, epoch: int, step: int, steps: int) -> float:
    progress = (epoch + step / max(steps, 1)) / s.epochs
    if s.warmup_epochs > 0 and progress * s.epochs < s.warmup_epochs:
        return (progress * s.epochs + 1.0 / max(steps, 1)) / s.warmup_epochs
    return SCHEDULES[s.schedule](progress, s.epochs, s.step_epochs, s.gamma)


class Grid(nn.Module):
    """All members, built on `device`. Plain linear heads on one feature set train as one
    LinearBank; every other member is its own module. One stock torch optimizer steps them
    all, with one parameter group per member (its lr and weight decay). forward(inputs, y)
    returns the summed loss (so a DDP wrapper sees one forward); `logits` gives each
    member's (n, classes) logits for evaluation."""

    def __init__(
        self,
        specs: list[MemberSpec],
        sets: list[FeatureSet],
        modules: list[nn.Module],
        settings: TrainSettings | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        settings = settings or TrainSettings()
        device = torch.device(device)
        modules = [m.to(device) for m in modules]
        self.specs, self.sets, self.settings = specs, sets, settings
        self.set_of = [sets.index(s.features) for s in specs]
        plain = [
            i for i, m in enumerate(modules) if isinstance(m, LinearHead) and isinstance(m.norm, nn.Identity)
        ]
        bank_members: dict[int, list[int]] = {}
        for i in plain:
            bank_members.setdefault(self.set_of[i], []).append(i)
        self.bank_sets = list(bank_members)
        self.bank_index = list(bank_members.values())
        self.banks = nn.ModuleList(LinearBank([modules[i] for i in idx]) for idx in self.bank_index)
        self.single_index = [i for i in range(len(modules)) if i not in set(plain)]
        self.singles = nn.ModuleList(modules[i] for i in self.single_index)
        tensors: dict[int, list[torch.Tensor]] = {i: list(modules[i].parameters()) for i in self.single_index}
        for bank, idx in zip(self.banks, self.bank_index):
            tensors.update({i: list(views) for i, views in zip(idx, bank.head_tensors)})
        groups = [
            {"params": tensors[i], "lr": s.lr, "weight_decay": s.wd, "base_lr": s.lr}
            for i, s in enumerate(specs)
        ]
        self.optimizer = OPTIMIZERS[settings.optimizer](groups, settings, optimizer_kernels(device))

    def forward(self, inputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        smoothing = self.settings.label_smoothing
        loss = inputs[0].new_zeros(())
        for bank, s in zip(self.banks, self.bank_sets):
            loss = loss + bank.loss(inputs[s], y, smoothing)
        for m, i in zip(self.singles, self.single_index):
            loss = loss + nn.functional.cross_entropy(m(inputs[self.set_of[i]]), y, label_smoothing=smoothing)
        return loss

    def zero_grad_all(self) -> None:
        self.zero_grad(set_to_none=True)
        self.optimizer.zero_grad(set_to_none=True)

    def step_all(self, factor: float) -> None:
        """One optimizer step, every member at lr = its own lr x factor."""
        for bank in self.banks:
            bank.share_grads()
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.step()

    def logits(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(self.specs)
        for bank, s, idx in zip(self.banks, self.bank_sets, self.bank_index):
            scores = bank(inputs[s])
            for j, i in enumerate(idx):
                out[i] = scores[:, j]
        for m, i in zip(self.singles, self.single_index):
            out[i] = m(inputs[self.set_of[i]])
        return out

    def member(self, i: int) -> nn.Module:
        """Member i as a standalone module (a bank member is exported as a LinearHead)."""
        if i in self.single_index:
            return self.singles[self.single_index.index(i)]
        for bank, idx in zip(self.banks, self.bank_index):
            if i in idx:
                return bank.export(idx.index(i), self.specs[i].features.in_shape)
        raise IndexError(i)


def head_inputs(
    values: dict[FeatureKey, np.ndarray],
    norms: dict[FeatureKey, Standardizer],
    sets: list[FeatureSet],
    device,
) -> list[torch.Tensor]:
    """Stored rows -> one standardized float32 tensor (n, *in_shape) per feature set."""
    flat = {k: norms[k](v) for k, v in values.items()}
    out = []
    for fs in sets:
        x = np.concatenate([flat[k] for k in fs.keys], axis=1) if len(fs.keys) > 1 else flat[fs.keys[0]]
        out.append(torch.from_numpy(np.ascontiguousarray(x)).reshape(len(x), *fs.in_shape).to(device))
    return out


def train_grid(
    grid: Grid,
    epochs: Callable[[int], Iterator[tuple[dict, np.ndarray]]],
    steps: int,
    norms: dict[FeatureKey, Standardizer],
    device: torch.device,
    *,
    ddp: nn.Module | None = None,
    progress: bool = True,
    after_epoch: Callable[[int], None] | None = None,
) -> dict:
    """Train every member for grid.settings.epochs over epochs(e) (one batch stream per
    epoch), calling after_epoch(e) (in eval mode; its time not counted) after each epoch.
    Returns timing (seconds, samples, samples/s) and the history: per epoch, the mean training
    loss per member and the lr factor the epoch began with."""
    settings = grid.settings
    model = ddp if ddp is not None else grid
    grid.train()
    samples, started, history = 0, time.perf_counter(), []
    for epoch in range(settings.epochs):
        summed, count = torch.zeros((), device=device), 0
        bar = progress_bar(
            progress,
            total=steps * settings.batch_size,
            unit="sample",
            unit_scale=True,
            desc=f"epoch {epoch + 1}/{settings.epochs}",
            leave=False,
        )
        for step, (values, labels) in enumerate(epochs(epoch)):
            inputs = head_inputs(values, norms, grid.sets, device)
            loss = model(inputs, torch.from_numpy(labels).to(device))
            grid.zero_grad_all()
            loss.backward()
            grid.step_all(lr_factor(settings, epoch, step, steps))
            samples += len(labels)
            summed, count = summed + loss.detach(), count + 1
            bar.update(len(labels))
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item() / len(grid.specs):.3f}")
        bar.close()
        mean_loss = float(summed) / max(count, 1) / len(grid.specs)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": round(mean_loss, 6),
                "lr_factor": lr_factor(settings, epoch, 0, steps),
            }
        )
        rate = samples / max(time.perf_counter() - started, 1e-9)
        progress_line(
            progress,
            f"epoch {epoch + 1}/{settings.epochs}: train loss {mean_loss:.4f} "
            f"(mean of {len(grid.specs)} members), {rate:,.0f} samples/s",
        )
        if after_epoch is not None:
            paused = time.perf_counter()
            grid.eval()
            after_epoch(epoch)
            grid.train()
            started += time.perf_counter() - paused
    seconds = time.perf_counter() - started
    grid.eval()
    return {
        "seconds": seconds,
        "samples": samples,
        "samples_per_s": samples / seconds if seconds > 0 else float("nan"),
        "history": history,
    }


@torch.no_grad()
def predict_grid(
    grid: Grid, batches: Iterable[tuple[dict, np.ndarray, np.ndarray]], norms, device, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k class indices of every member on every row: ((n, members, k), labels (n,))."""
    grid.eval()
    tops, ys = [], []
    for values, labels, _rows in batches:
        logits = grid.logits(head_inputs(values, norms, grid.sets, device))
        kk = min(k, logits[0].shape[1])
        tops.append(
            torch.stack([out.float().topk(kk, dim=1).indices for out in logits], dim=1)
            .cpu()
            .numpy()
            .astype(np.int32)
        )
        ys.append(labels)
    if not tops:
        return np.zeros((0, len(grid.specs), k), np.int32), np.zeros(0, np.int64)
    return np.concatenate(tops), np.concatenate(ys)
