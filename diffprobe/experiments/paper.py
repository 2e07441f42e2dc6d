"""The paper's table, one row at a time (the rows are in experiments.toml)."""

from __future__ import annotations

from diffprobe.experiments.builders import extraction, more, opt, train_test
from diffprobe.experiments.core import extract
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings, defaults
from diffprobe.experiments.steps import Command


@experiment("paper")
def paper(s: Settings) -> Steps:
    """one row of the paper's table as diffssl trains it, from the cache: the training split
    extracted as K views per image (VIEWS, default 8), each a seeded draw of diffssl's loader
    (guided-diffusion's random crop: short side to [S, S/0.8], a random S crop, a flip) with its
    own noise, rows in a seeded order, the U-Net in fp16 autocast; the probe draws one view per
    image per epoch (VIEWS_MODE=mean averages them instead). The test split: one centre view.

    Then diffssl's recipe (`--recipe paper`: SGD, StepLR(7), 28 epochs, batch 128, raw features,
    all of train, test evaluated once). On the real model: make paper ROW=attention
    MODEL=adm256-uncond CKPT=... DATA=imagenet DATA_ROOT=... SPLITS="train val" (DRY=1 first: it
    prints each store's size and FLOPs). The fgvc-* rows fix their dataset and splits (the
    official training split, train+val where a dataset has a separate val, and the test split)
    and take the attention row's settings: diffssl ships no FGVC script, and the attention head
    is the paper's best ImageNet head."""
    yield from extract(s)
    train, test = (str(extraction(s, split).cfg.store.out) for split in train_test(s))
    name = f"paper-{s.row}" + ("" if s.model == defaults().model else f"-{s.model}")
    argv = ["train", "--train", train, "--test", test, "--recipe", "paper", "--head", s.head]
    argv += [*opt("--features", s.features), "--views", s.views_mode, "--results", "results/paper"]
    yield Command("probe", (*argv, "--name", name, *more(s.paper_args)))
