"""Steps built from settings: the stages' command lines, written once for every experiment."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

from diffprobe.experiments.settings import Settings, format_value
from diffprobe.experiments.steps import Extract, extract_config
from diffprobe.experiments.stores import store_path


def opt(flag: str, value) -> list[str]:
    """[flag, value], or nothing when the value is not given."""
    text = format_value(value)
    return [flag, text] if text else []


def more(text: str) -> list[str]:
    """A setting of more options (ARGS=, PROBE_ARGS=, ...) as words."""
    return shlex.split(text)


def weights(s: Settings) -> list[str]:
    """--ckpt FILE, --random-init (the random-weight control), or the preset's own weights."""
    return ["--ckpt", str(s.ckpt)] if s.ckpt else (["--random-init"] if s.random else [])


def train_test(s: Settings) -> tuple[str, str]:
    """The training split (the first of SPLITS) and the test split (the second)."""
    if len(s.splits) < 2:
        raise ValueError(f"SPLITS={' '.join(s.splits)}: give a training and a test split")
    return s.splits[0], s.splits[1]


def store_folder(s: Settings) -> Path:
    return s.store_out or s.out


def extraction(s: Settings, split: str, *, keyed: bool = True) -> Extract:
    """`extract run` of one split at the settings' model and coordinates, into the store its
    config names. `keyed`: also the row order, seed, forward dtype, block pools, the training
    split's views and augmentation, and ARGS (the CKA maps' extractions take none of them)."""
    head = ["run", "--model", s.model, *weights(s), "--data", s.data, *opt("--data-root", s.data_root)]
    head += [
        "--split",
        split,
        "-t",
        format_value(s.t),
        "-b",
        format_value(s.b),
        "--pool",
        format_value(s.pool),
    ]
    head += opt("--limit", s.limit)
    tail: list[str] = []
    if keyed:
        head += [*opt("--block-pool", s.block_pools), "--order", s.order, *opt("--seed", s.seed)]
        head += ["--data-seed", "0"] if s.seed is not None else []
        head += ["--dtype", s.dtype]
        head += ["--views", str(s.views), "--aug", s.aug] if split == s.splits[0] else []
        tail = more(s.args)
    # the store is named from the parsed config, so the parse takes a placeholder --out
    cfg = extract_config((*head, "--out", ".", *tail), shown=(*head, *tail))
    path = store_path(store_folder(s), cfg)
    argv = (*head, "--out", str(path), *tail)
    return Extract(argv, replace(cfg, store=replace(cfg.store, out=path)), s.images_per_s)
