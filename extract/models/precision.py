"""The forward's autocast dtypes, by the names configs use (extract.store.config.FORWARD_DTYPES)."""

from __future__ import annotations

import torch

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
