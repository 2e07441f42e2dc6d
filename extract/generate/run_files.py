"""What the demo U-Net's and the BiGAN's trainers share besides their step loop
(extract.generate.loop) and their checkpoint file (extract.checkpoints): the training images in
memory, the step log, and the dtypes an export may take."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from extract.data.registry import open_dataset
from extract.data.sources import preprocess

EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def load_training_images(
    data: str, data_root: str | None, split: str, size: int, channels: int
) -> tuple[torch.Tensor, str]:
    """Every image of a split as one float32 (N, channels, size, size) tensor in [-1, 1], and the
    source's fingerprint."""
    source = open_dataset(data, Path(data_root) if data_root else None, split)
    rows = [preprocess(source.load(i), size, channels) for i in range(len(source))]
    return torch.stack(rows), source.fingerprint()


def read_log(out: str | Path, name: str = "train_log.jsonl") -> list[dict]:
    rows = [json.loads(line) for line in (Path(out) / name).read_text().splitlines() if line.strip()]
    # a resumed run re-logs steps after its last checkpoint: keep the latest of each
    return sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])
