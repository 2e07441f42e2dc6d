"""Training the small Fashion-MNIST CNN (extract.models.classifier) whose features measure
Fréchet distances of grayscale 32x32 samples.

Training selects the epoch on a seeded validation carve of the train split; the test split is
evaluated once, at the end, for the card.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extract.models.classifier import CHANNELS, IMAGE_SIZE, SmallCNN


@dataclass(frozen=True)
class ClassifierConfig:
    out: Path = Path("extract/weights/fmnist-classifier.pt")
    data: str = "fashion-mnist"
    data_root: Path | None = None
    val_size: int = 6000  # carved from train by a seeded permutation; selects the epoch
    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int | None = 1


def load_split(data: str, root: Path | None, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """A whole split preprocessed as extraction does: float32 (N, 1, 32, 32) in [-1, 1], labels (N,)."""
    from extract.data.registry import open_dataset
    from extract.data.sources import preprocess

    source = open_dataset(data, root, split)
    images = torch.stack([preprocess(source.load(i), IMAGE_SIZE, CHANNELS) for i in range(len(source))])
    return images, np.asarray(source.labels)


@torch.no_grad()
def accuracy(model: SmallCNN, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    hits = sum(
        int((model(x[s : s + batch]).argmax(1) == y[s : s + batch]).sum()) for s in range(0, len(x), batch)
    )
    return 100.0 * hits / len(x)


def train_classifier(cfg: ClassifierConfig, progress: bool = True) -> dict:
    """Train, keep the validation-best epoch, evaluate it on test once, write the state_dict
    (fp32) and a JSON of the run beside it. Returns that JSON's content."""
    from extract.store import progress as store_progress

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    x_all, y_all = load_split(cfg.data, cfg.data_root, "train")
    perm = np.random.default_rng(cfg.seed).permutation(len(x_all))
    val_rows, train_rows = np.sort(perm[: cfg.val_size]), np.sort(perm[cfg.val_size :])
    x_tr, y_tr = x_all[train_rows], torch.as_tensor(y_all[train_rows])
    x_va, y_va = x_all[val_rows], torch.as_tensor(y_all[val_rows])
    torch.manual_seed(cfg.seed)
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    best, history = (-1.0, 0, None), []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for s in store_progress.bar(
            progress, iterable=range(0, len(x_tr), cfg.batch_size), desc=f"epoch {epoch}", leave=False
        ):
            idx = order[s : s + cfg.batch_size]
            x = x_tr[idx]
            # random horizontal flips: garments are (nearly) mirror-symmetric
            x = torch.where(torch.rand(len(x), 1, 1, 1, generator=gen) < 0.5, x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val = accuracy(model, x_va, y_va)
        history.append(
            {"epoch": epoch, "val_top1": round(val, 2), "seconds": round(time.perf_counter() - started, 1)}
        )
        if progress:
            print(json.dumps(history[-1]), flush=True)
        if val > best[0]:
            best = (val, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    x_te, y_te = load_split(cfg.data, cfg.data_root, "test")
    test = accuracy(model, x_te, torch.as_tensor(y_te))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.float().contiguous() for k, v in model.state_dict().items()}, out)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    record = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "best_epoch": best[1],
        "val_top1": round(best[0], 2),
        "test_top1": round(test, 2),
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
        "torch_version": torch.__version__,
        "sha256": sha,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record
