"""A small CNN trained on Fashion-MNIST: the feature space for Fréchet distances of grayscale
32x32 samples (Inception-v3 was trained on ImageNet photographs and says little about 28x28
clothing icons).

The network sees images exactly as extraction preprocesses them (`extract.data.sources.preprocess`
at 32x32, one channel, [-1, 1]). Its features are the 128 values of the layer under the
linear classifier; `extract features --features classifier:FILE` writes them into a store.
Training it is `extract.generate.classifier`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGE_SIZE = 32
CHANNELS = 1
FEATURE_DIM = 128


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Three stages of 3x3 conv, batch norm, ReLU and 2x2 max pool (32, 64, 128 channels;
    32 -> 16 -> 8 -> 4), then a 2048 -> 128 linear layer with ReLU (the features), dropout and
    the linear classifier. The 4x4 map is flattened, not averaged: where a garment's parts sit
    is most of what tells a shirt from a coat at this size. 356,458 parameters."""

    def __init__(self, in_channels: int = CHANNELS, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(_stage(in_channels, 32), _stage(32, 64), _stage(64, 128))
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, FEATURE_DIM), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 32, 32) in [-1, 1] -> (N, 128)."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 32, 32) -> logits (N, 10)."""
        return self.head(self.dropout(self.features(x)))


def load_classifier(path: str | Path) -> tuple[SmallCNN, str]:
    """The classifier from a state_dict file (weights-only load), in eval mode, and its sha256."""
    from extract.models.weights import CheckpointError, file_sha256, fit_of, read_state_dict

    state = read_state_dict(path)
    model = SmallCNN()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fit = fit_of({k: tuple(v.shape) for k, v in state.items()}, expected)
    if not fit.ok:
        raise CheckpointError(f"{path} is not a SmallCNN classifier state_dict: {fit.describe(limit=3)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval(), file_sha256(path)
