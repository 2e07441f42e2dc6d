"""The demo classifier's accuracy helper against a plain argmax count."""

from __future__ import annotations

import torch

from extract.generate.classifier import accuracy
from extract.models.classifier import CHANNELS, IMAGE_SIZE, SmallCNN


def test_accuracy_in_batches_equals_one_argmax_over_all_images():
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(37, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    y = torch.randint(0, 10, (37,))
    with torch.no_grad():
        expected = 100.0 * float((model.eval()(x).argmax(1) == y).sum()) / 37
    assert accuracy(model, x, y, batch=8) == expected
