"""A training run's state file: written atomically, read back only under the same settings.

Shared by the trainers of extract.generate (the demo U-Net, the BiGAN) and by fine-tuning
(probe.finetune), which may not enter the generate room."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_atomic(path: Path, payload) -> None:
    """torch.save to a temporary name, then rename: a crash mid-save leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_state(
    path: Path,
    device: torch.device | str,
    expected: dict,
    needs: tuple[str, ...] = (),
    kind: str = "training",
) -> dict | None:
    """The run folder's checkpoint (None when there is none yet), its tensors on `device`. A torn
    or foreign file, or one whose state["config"] differs from `expected` (name -> value of the
    settings a resumed run must keep), is one clear error."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file is one user-facing line
        raise ValueError(
            f"{path}: not a loadable training checkpoint ({type(e).__name__}); remove it or use a new --out"
        ) from None
    if not isinstance(state, dict) or not all(k in state for k in ("config", *needs)):
        raise ValueError(f"{path}: not a {kind} checkpoint; use a new --out")
    changed = [k for k, v in expected.items() if state["config"].get(k) != v]
    if changed:
        raise ValueError(f"{path}: cannot resume with a different {', '.join(changed)}; use a new --out")
    return state
