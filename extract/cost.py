"""What an extraction will cost, before it runs: rows, values per row, size on disk, U-Net FLOPs.

`extract run ... --plan` prints it and writes nothing. Rows are the selected images when the
data can be read, else the split's official size from the dataset registry (so a plan for
ImageNet needs no ImageNet), capped by --limit. FLOPs are counted by torch's flop counter on the
meta device (no weights, no memory): one forward of one image stopped after the deepest
requested block, times timesteps and views. Hours need a measured rate (--images-per-s: forwards
of one image at one t per second on the machine that will run it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.data.registry import get_dataset, parse_options
from extract.data.sources import DataError
from extract.store.config import ExtractConfig


@dataclass(frozen=True)
class Cost:
    store: str
    rows: int
    rows_from: str  # "data" (the selection read) or "official" (the registry's count)
    views: int
    ts: int
    keys: int
    values_per_row: int  # per view
    bytes: int
    gflop_per_forward: float | None  # one image, one t, stopped after the deepest block
    images_per_s: float | None = None

    @property
    def forwards(self) -> int:
        return self.rows * self.views * self.ts

    @property
    def pflop(self) -> float | None:
        return None if self.gflop_per_forward is None else self.gflop_per_forward * self.forwards / 1e6

    @property
    def hours(self) -> float | None:
        return None if not self.images_per_s else self.forwards / self.images_per_s / 3600

    def line(self) -> str:
        flops = (
            "U-Net FLOPs not counted for this family"
            if self.pflop is None
            else (
                f"U-Net {scaled(self.gflop_per_forward * 1e9, 'FLOP')} per forward "
                f"x {self.forwards:,} forwards = {scaled(self.pflop * 1e15, 'FLOP')}"
            )
        )
        size = scaled(self.bytes, "B")
        hours = (
            f"; at {self.images_per_s:,.0f} forwards/s: {self.hours:,.2f} h"
            if self.hours is not None
            else "; give --images-per-s for hours"
        )
        return (
            f"plan {self.store}: {self.rows:,} rows ({self.rows_from}) x {self.views} view(s), "
            f"{self.keys} keys, {self.values_per_row:,} values per row: {size}; {flops}{hours}"
        )


def scaled(value: float, unit: str) -> str:
    """1234567 B -> '1.23 MB': the largest SI prefix that keeps the number at least 1."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:,.2f} {prefix}{unit}"
    return f"{value:,.0f} {unit}"


def planned_rows(cfg: ExtractConfig) -> tuple[int, str]:
    """The rows the run would write: read from the data when it is there, else the official count."""
    from extract.data.selection import select_data

    sel = cfg.selection
    try:
        _, rows, _ = select_data(sel, cfg.seed)
        return len(rows), "data"
    except (DataError, FileNotFoundError, OSError):
        spec = get_dataset(sel.data)
        official = spec.official.get(sel.split)
        if official is None:
            raise DataError(
                f"{sel.data} {sel.split}: the data cannot be read here "
                "and the registry has no official size for it"
            ) from None
        parse_options(spec, sel.data_opts)
        return (min(official, sel.limit) if sel.limit else official), "official"


def forward_gflop(preset, deepest: int) -> float | None:
    """GFLOP of one image's forward stopped after block `deepest` (ADM presets; None otherwise)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from extract.models.adm import build_unet
    from extract.models.adm_blocks import capture
    from extract.models.adm_presets import ModelPreset

    if not isinstance(preset, ModelPreset):  # a named ADM preset or one built from --model-flags
        return None
    model = build_unet(preset, "meta")
    s = preset.image_size
    x = torch.empty(1, preset.in_channels, s, s, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta") if preset.class_cond else None
    with FlopCounterMode(display=False) as counter:
        capture(model, x, t, [deepest], y=y)
    return counter.get_total_flops() / 1e9


def plan(cfg: ExtractConfig, images_per_s: float | None = None) -> Cost:
    """The cost of `extract(cfg)`, from its validated arguments, without running it."""
    import dataclasses

    from extract.run import validate

    # the weights change no shape: plan as for a random-weight control, so no checkpoint is needed
    preset, blocks, shapes = validate(dataclasses.replace(cfg, ckpt=None, random_init=True))
    rows, source = planned_rows(cfg)
    values = int(sum(np.prod(s) for s in shapes.values()))
    itemsize = np.dtype(cfg.store_dtype).itemsize
    return Cost(
        store=str(cfg.store.out),
        rows=rows,
        rows_from=source,
        views=cfg.views,
        ts=len(cfg.ts),
        keys=len(shapes),
        values_per_row=values,
        bytes=rows * cfg.views * values * itemsize,
        gflop_per_forward=forward_gflop(preset, max(blocks)),
        images_per_s=images_per_s,
    )
