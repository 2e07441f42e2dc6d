"""The demo's tables on all images: the paper's table over seeds (demo-table) and the model card's
runs (card-demo). Each step is skipped when its output is made, so a killed run resumes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from diffprobe.experiments.builders import extraction, opt, store_folder, train_test
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings, format_value
from diffprobe.experiments.steps import Command, Copy, Extract, Say
from diffprobe.experiments.stores import bigan_path, made, pixel_path
from extract.store.location import Location, store_location

# both tables extract with wider forwards than the default and print no progress bars
QUIET = "--micro-batch 64 --no-progress"
PROBE = ("--buffer-mb", "9000", "--no-progress")
# the attention head: the recipe's (AdamW lr 1e-3, wd 0.05, 3 epochs) at width 128 and at most 8x8
# tokens (larger maps cut into patches, no value dropped), so that each of its 15 runs on 54,000
# images takes minutes on a CPU; the chosen key's full 32x32 map is 1,024 tokens
ATTENTION = ("--head", "attention", "--head-opt", "width=128", "--head-opt", "token_side=8")
# the lr grid and epochs of the card's runs
CARD_GRID = ("--lr", "1e-3,3e-3,1e-2", "--wd", "0", "--epochs", "10")


@dataclass(frozen=True)
class BiganGrid(Settings):
    """The settings, and the BiGAN encoder's grid: its stages and pools."""

    bigan_b: tuple[str, ...]
    bigan_pool: tuple[str, ...]


@dataclass(frozen=True)
class BiganSettings(BiganGrid):
    """The settings, and the BiGAN baseline's encoder: its weights and grid."""

    bigan_weights: Path


@dataclass(frozen=True)
class TableSettings(BiganSettings):
    """demo-table's own: head seeds, each model's region (t, blocks, pools), the FD files."""

    head_seeds: tuple[int, ...]
    heads: tuple[str, ...]
    best_t: tuple[int, ...]
    best_b: tuple[str, ...]
    best_pool: tuple[str, ...]
    paper_t: tuple[int, ...]
    paper_b: tuple[str, ...]
    paper_pool: tuple[str, ...]
    random_t: tuple[int, ...]
    random_b: tuple[str, ...]
    random_pool: tuple[str, ...]
    fd_trained: Path
    fd_random: Path
    fd_bigan: Path
    mae_weights: Path
    mae_model: str
    mae_args: tuple[str, ...]
    mae_b: tuple[str, ...]
    mae_pool: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """One probe run of a table row: its results tag, its stores and its head seed."""

    tag: str
    train: Path
    test: Path
    head_seed: int


@dataclass(frozen=True)
class Row:
    """A table row: the stem of its results names, and its runs."""

    name: str
    runs: tuple[Run, ...]


def bigan_features(s: BiganGrid, weights: Path, split: str, limit: int | None, out: Path) -> Command:
    """A BiGAN encoder's features of one split; z is a 1x1 map, so its larger pools are left out."""
    argv = ["bigan-features", "--weights", str(weights), "--data", s.data, "--split", split]
    argv += [*opt("--limit", limit), "-b", format_value(s.bigan_b), "--pool", format_value(s.bigan_pool)]
    return Command("extract", (*argv, "--skip-small-maps", "--no-progress", "--out", str(out)))


def bigan_stores(s: BiganSettings) -> Steps:
    """Each split's BiGAN store unless made; without its weights a line says the row is left out."""
    for split in s.splits:
        if not s.bigan_weights.exists():
            hint = "its row is left out (extract train-bigan, then export-bigan)"
            yield Say(f"no BiGAN weights at {s.bigan_weights}: {hint}")
            continue
        out = bigan_path(store_folder(s), s.data, split, s.limit)
        if not made(out):
            yield bigan_features(s, s.bigan_weights, split, s.limit, out)


def mae_path(s: TableSettings, split: str) -> Location:
    """The MAE encoder's store: <folder>/mae_<data>_<split>[_n<LIMIT>].zarr."""
    return store_location(store_folder(s)) / f"mae_{s.data}_{split}{f'_n{s.limit}' if s.limit else ''}.zarr"


def mae_stores(s: TableSettings) -> Steps:
    """Each split's store of the MAE trained here (its timm ViT encoder's blocks) unless made;
    without its weights a line says the row is left out."""
    for split in s.splits:
        if not s.mae_weights.exists():
            hint = "its row is left out (extract train-mae, then export-mae)"
            yield Say(f"no MAE weights at {s.mae_weights}: {hint}")
            continue
        out = mae_path(s, split)
        if not made(out):
            argv = ["run", "--model", s.mae_model, "--ckpt", str(s.mae_weights), "--data", s.data]
            argv += ["--split", split, *opt("--limit", s.limit), "-b", format_value(s.mae_b)]
            argv += ["--pool", format_value(s.mae_pool), *(a for w in s.mae_args for a in ("--model-arg", w))]
            yield Command("extract", (*argv, "--no-progress", "--out", str(out)))


def pixel_store(s: Settings, split: str, limit: int | None) -> Steps:
    """The raw-pixel store of one split, unless made."""
    out = pixel_path(store_folder(s), s.data, split, limit)
    if not made(out):
        argv = ("pixels", "--data", s.data, "--split", split, *opt("--limit", limit))
        yield Command("extract", (*argv, "--no-progress", "--out", str(out)))


def pixel_stores(s: Settings) -> Steps:
    for split in s.splits:
        yield from pixel_store(s, split, s.limit)


# ------------------------------------------------------------------------------------ demo-table
@dataclass(frozen=True)
class Region:
    """A model's region of the table: the results stem, weights and coordinates."""

    name: str
    random: bool
    t: tuple[int, ...]
    b: tuple[str, ...]
    pool: tuple[str, ...]


def regions(s: TableSettings) -> tuple[Region, ...]:
    return (
        Region("diffusion-best", False, s.best_t, s.best_b, s.best_pool),
        Region("diffusion-paper", False, s.paper_t, s.paper_b, s.paper_pool),
        Region("random", True, s.random_t, s.random_b, s.random_pool),
    )


def region_extraction(s: TableSettings, region: Region, seed: int, split: str) -> Extract:
    """A region's store at one noise seed; the random control never loads CKPT."""
    ckpt = None if region.random else s.ckpt
    at = replace(s, t=region.t, b=region.b, pool=region.pool, random=region.random, ckpt=ckpt)
    return extraction(replace(at, seed=seed, args=QUIET), split)


def seed_pairs(s: TableSettings) -> list[tuple[int, int]]:
    """Noise seed k with head seed k."""
    if len(s.seeds) != len(s.head_seeds):
        raise ValueError(
            f"SEEDS={format_value(s.seeds)} HEAD_SEEDS={format_value(s.head_seeds)}: noise seed k pairs"
            " with head seed k, so give as many of each"
        )
    return list(zip(s.seeds, s.head_seeds))


def table_rows(s: TableSettings) -> list[Row]:
    """The rows in the order they train: the regions over paired seeds, pixels, the BiGAN, the MAE."""
    train, test = train_test(s)
    rows = []
    for region in regions(s):
        runs = []
        for seed, head_seed in seed_pairs(s):
            train_store, test_store = (
                region_extraction(s, region, seed, x).cfg.store.out for x in (train, test)
            )
            runs.append(Run(f"n{seed}-s{head_seed}", train_store, test_store, head_seed))
        rows.append(Row(region.name, tuple(runs)))
    folder = store_folder(s)
    pixels = tuple(pixel_path(folder, s.data, split, s.limit) for split in (train, test))
    rows.append(Row("pixels", tuple(Run(f"s{h}", *pixels, h) for h in s.head_seeds)))
    if s.bigan_weights.exists():
        bigan = tuple(bigan_path(folder, s.data, split, s.limit) for split in (train, test))
        rows.append(Row("bigan", tuple(Run(f"s{h}", *bigan, h) for h in s.head_seeds)))
    if s.mae_weights.exists():
        mae = tuple(mae_path(s, split) for split in (train, test))
        rows.append(Row("mae", tuple(Run(f"s{h}", *mae, h) for h in s.head_seeds)))
    return rows


def table_probes(s: TableSettings, rows: list[Row], head: str) -> Steps:
    """One head per run unless its results exist; the attention head trains at the key its run's
    linear head chose (the paper trains it at its linear probe's block)."""
    for row in rows:
        for run in row.runs:
            name = f"{row.name}-{head}-{run.tag}"
            if made(s.results / f"{name}.json"):
                continue
            argv = ["train", "--train", str(run.train), "--test", str(run.test)]
            argv += ["--seed", str(run.head_seed), "--results", str(s.results), *PROBE]
            if head == "attention":
                argv += [*ATTENTION, "--features-from", f"{s.results}/{row.name}-linear-{run.tag}.json"]
            else:
                argv += ["--head", head]
            yield Command("probe", (*argv, "--name", name))


def table_summary(s: TableSettings) -> Command:
    """`analysis table`: each cell's mean, spread and runs, FD, and every row minus the diffusion row."""
    best = "diffusion (best block)"
    paper = f"diffusion (t={format_value(s.paper_t)}, b={format_value(s.paper_b)})"
    rows = {best: "diffusion-best", paper: "diffusion-paper", "BiGAN": "bigan", "MAE": "mae"}
    rows |= {"random weights": "random", "pixels": "pixels"}
    argv = ["table", "--head", format_value(s.heads), "--ref", best, "--out", f"{s.results}/table.md"]
    for label, stem in rows.items():
        argv += ["--row", f"{label}={s.results}/{stem}-{{head}}-*.json"]
    fds = {best: s.fd_trained, paper: s.fd_trained, "random weights": s.fd_random}
    fds |= {"BiGAN": s.fd_bigan} if s.fd_bigan.exists() else {}
    for label, path in fds.items():
        argv += ["--fd", f"{label}={path}"]
    return Command("analysis", tuple(argv))


@experiment("demo-table", cls=TableSettings)
def demo_table(s: TableSettings) -> Steps:
    """the demo's results in the paper's shape, over seeds: test top-1 of a linear and an
    attention head for the diffusion model at its best block (chosen on validation among BEST_B x
    BEST_POOL at BEST_T) and at the paper's point (t=150, b=24), the BiGAN encoder and the MAE's
    (the paper's MAGE row; each when its weights exist), the random-weight control at its own best
    region (RANDOM_T, RANDOM_B, RANDOM_POOL, from its own sweep) and raw pixels.

    The diffusion and random rows are extracted with each of SEEDS (noise; the images stay the
    same). A head seed (HEAD_SEEDS) sets initialisation, data order and the 10% validation carve
    that chooses the block, pool and lr. The linear head searches each row's region; the attention
    head trains once, at the key that run's linear head chose. The rows without noise (BiGAN,
    MAE, pixels) train a head with each head seed; the diffusion and random rows pair them, noise
    seed k with head seed k, so each of their cells is as many runs as the others and each run
    differs in both. Then one table: mean, spread and runs per cell, the generative rows' FD in the
    classifier's features, and every row minus the diffusion row with a paired-bootstrap 95%
    interval. Steps are skipped when their output exists, so the run resumes."""
    seed_pairs(s)  # unpaired seeds stop here, before the first extraction
    for region in regions(s):
        for seed in s.seeds:
            for split in s.splits:
                step = region_extraction(s, region, seed, split)
                if not made(step.cfg.store.out):
                    yield step
    yield from pixel_stores(s)
    yield from bigan_stores(s)
    yield from mae_stores(s)
    rows = table_rows(s)
    for head in ("linear", "attention"):
        yield from table_probes(s, rows, head)
    yield table_summary(s)


# ------------------------------------------------------------------------------------- card-demo
def card_extraction(s: BiganSettings, split: str, random: bool) -> Extract:
    """The card's store of one split; b=31 (a 16x16 map) is pooled to 4 and 8, as the others'
    full maps are 8x8. Its name leaves those block pools out, as the card's stores made so far
    are named, so they are found and not extracted again."""
    at = replace(s, random=random, ckpt=None, block_pools="")
    named = extraction(replace(at, args=QUIET), split).cfg.store.out
    step = extraction(replace(at, args=f"{QUIET} --block-pool 31:4,8"), split)
    at_out = step.argv.index("--out") + 1
    argv = (*step.argv[:at_out], str(named), *step.argv[at_out + 1 :])
    return Extract(argv, replace(step.cfg, store=replace(step.cfg.store, out=named)), step.images_per_s)


def card_probe(s: BiganSettings, name: str, train: Path, test: Path, *options: str) -> Steps:
    if not made(s.results / f"{name}.json"):
        argv = ("train", "--train", str(train), "--test", str(test), *options, "--name", name)
        yield Command("probe", (*argv, "--results", str(s.results), *PROBE))


def card_probes(s: BiganSettings) -> Steps:
    """Linear heads of the trained and random stores, the trained grid for 20 epochs at its
    chosen key (lr x weight decay), raw pixels, and the BiGAN when its weights exist."""
    train, test = train_test(s)
    trained, random = ([card_extraction(s, x, r).cfg.store.out for x in (train, test)] for r in (False, True))
    yield from card_probe(s, "card-trained", *trained, *CARD_GRID)
    yield from card_probe(s, "card-random", *random, *CARD_GRID)
    longer = ("--features-from", f"{s.results}/card-trained.json", "--lr", "1e-3,3e-3,1e-2")
    yield from card_probe(s, "card-trained-20ep", *trained, *longer, "--wd", "0,0.05", "--epochs", "20")
    folder = store_folder(s)
    pixels = (pixel_path(folder, s.data, x, s.limit) for x in (train, test))
    yield from card_probe(s, "card-pixels", *pixels, "--head", "logreg")
    yield from bigan_stores(s)
    if s.bigan_weights.exists():
        bigan = (bigan_path(folder, s.data, x, s.limit) for x in (train, test))
        yield from card_probe(s, "card-bigan", *bigan, *CARD_GRID)


@experiment("card-demo", cls=BiganSettings)
def card_demo(s: BiganSettings) -> Steps:
    """the model card's runs on all 60,000 / 10,000 images at the sweep's best level: t=10, the
    encoder's 8x8 and 4x4 blocks (b=7-12) and the decoder's 8x8 blocks and their 16x16 successor
    (b=28-31), pools 4 and full (b=31, a 16x16 map, at pools 4 and 8: 8x8 as the others' full
    maps), for the trained and the random weights; raw pixels; and, when its weights exist, the
    BiGAN baseline's encoder over its own grid (every stage, pools 1, 2, 4 and full), with the
    same lr grid, epochs and validation carve; then make probe's longer grid (20 epochs, lr x
    weight decay) at the key the trained grid chose, and every member as CSV in evidence/. Each
    step is skipped when its output exists (delete it to re-run)."""
    for random in (True, False):
        for split in s.splits:
            step = card_extraction(s, split, random)
            if not made(step.cfg.store.out):
                yield step
    yield from pixel_stores(s)
    yield from card_probes(s)
    runs = {"trained": "card-trained", "random-weights": "card-random"}
    runs |= {"trained-20-epochs": "card-trained-20ep", "pixels": "card-pixels"}
    argv = [arg for label, name in runs.items() for arg in ("--results", f"{label}={s.results}/{name}.json")]
    csv = ("--by", "b", "--csv", "evidence/demo-card.members.csv")
    yield Command("analysis", ("best", *argv, *csv))
    bigan = s.results / "card-bigan.json"
    if bigan.exists():
        csv = ("--by", "b", "--csv", "evidence/demo-card-bigan.members.csv")
        yield Command("analysis", ("best", "--results", f"bigan={bigan}", *csv))
    yield Copy(s.results / "probe_results.csv", Path("evidence/demo-card.runs.csv"))
