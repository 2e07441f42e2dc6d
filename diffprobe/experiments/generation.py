"""The demo model as a generator (demo-gen: its samples scored against the test split) and over
training (demo-curve: probes and samples of each checkpoint), and training it (train-demo)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from diffprobe.experiments.builders import extraction, more
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings
from diffprobe.experiments.steps import Command, Copy, Extract, Say
from diffprobe.experiments.stores import made

# the card run's probe table (make card-demo), else the one committed beside the model card
CARD_PROBES = Path("results/card/probe_results.csv")
EVIDENCE_PROBES = Path("evidence/demo-card.runs.csv")
CLASSIFIER = Path("extract/weights/fmnist-classifier.pt")
# the first stage's exported EMA (5,000 steps), committed beside the continued runs' evidence
FIRST_STAGE = Path("evidence/demo-continue/first-stage.pt")
# make train-demo keeps an EMA snapshot every 1,000 steps: stage 2 stops after 4,000, stage 3 runs 6,000
STAGE_SNAPSHOTS = (("stage2", 4), ("stage3", 6))
# the encoder's best point (the first-stage weights' best) and the paper's, on the same stores
CURVE_POINTS = (("best", "t10/b9/full"), ("paper", "t150/b24/full"))


@dataclass(frozen=True)
class GenSettings(Settings):
    gen_n: int
    gen_steps: int
    gen_sampler: Literal["ddpm", "ddim"]
    gen_batch: int
    gen_out: Path
    gen_classifier: Path
    gen_feature_net: Path
    # empty: the card run's probe table when it exists, else the committed one
    gen_probes: Path | None
    bigan_weights: Path


def gen_sample(s: GenSettings, *extra: str) -> Command:
    """`extract sample` of the demo model: GEN_N images, image i seeded by (seed, i)."""
    argv = ("sample", "--model", "demo-fmnist", "--num-samples", str(s.gen_n), "--sampler", s.gen_sampler)
    argv += ("--steps", str(s.gen_steps), "--batch-size", str(s.gen_batch), "--no-progress")
    return Command("extract", (*argv, *extra))


def gen_fd(s: GenSettings, *extra: str) -> Command:
    """`analysis fid` against Fashion-MNIST test in the classifier's features."""
    argv = ("fid", "--data", "fashion-mnist", "--split", "test")
    argv += ("--features", f"classifier:{s.gen_classifier}", "--no-progress")
    return Command("analysis", (*argv, *extra))


def probe_table(s: GenSettings) -> Path:
    if s.gen_probes:
        return s.gen_probes
    return CARD_PROBES if CARD_PROBES.exists() else EVIDENCE_PROBES


@experiment("demo-gen", cls=GenSettings)
def demo_gen(s: GenSettings) -> Steps:
    """the generative half of the table on the demo model: samples of the shipped demo U-Net and
    of its random-weight control (DDIM, GEN_STEPS steps, image i seeded by (seed, i)), then the
    Frechet distance, precision and recall of each against Fashion-MNIST test in the feature
    space of the shipped classifier, the same for the BiGAN baseline's generator when its weights
    exist (image i's z seeded by (seed, i)), the split-half baseline (the test split's two halves
    against each other), and one table beside the validation-best linear-probe accuracy of the
    same weights. Resumable: a killed run continues where it stopped."""
    out = s.gen_out
    yield gen_sample(s, "--out", f"{out}/samples-trained")
    yield gen_sample(s, "--random-init", "--out", f"{out}/samples-random")
    for kind in ("trained", "random"):
        yield gen_fd(s, "--fake", f"{out}/samples-{kind}", "--out", f"{out}/fd-{kind}.json")
    bigan_fd = out / "fd-bigan.json"
    if s.bigan_weights.exists():
        argv = ("bigan-sample", "--weights", str(s.bigan_weights), "--n", str(s.gen_n), "--seed", "0")
        yield Command("extract", (*argv, "--out", f"{out}/samples-bigan"))
        yield gen_fd(s, "--fake", f"{out}/samples-bigan", "--out", str(bigan_fd))
    else:
        hint = "its samples are left out (extract train-bigan, then export-bigan)"
        yield Say(f"no BiGAN weights at {s.bigan_weights}: {hint}")
    yield gen_fd(s, "--split-half", "--out", f"{out}/fd-floor.json")
    yield gen_table(s, bigan_fd)
    for name in ("generation.json", "generation.csv"):
        yield Copy(out / name, Path("evidence/demo-gen") / name)
    yield Copy(out, Path("evidence/demo-gen"))


def gen_table(s: GenSettings, bigan_fd: Path) -> Command:
    """`analysis gen-table` over the distances written so far (the BiGAN's only once it exists)."""
    fds = [f"trained={s.gen_out}/fd-trained.json", f"random-init={s.gen_out}/fd-random.json"]
    fds += [f"BiGAN={bigan_fd}"] if bigan_fd.exists() else []
    fds += [f"test-half-floor={s.gen_out}/fd-floor.json"]
    argv = ["gen-table", *(word for fd in fds for word in ("--fd", fd))]
    argv += ["--probe-table", str(probe_table(s)), "--feature-net", str(s.gen_feature_net)]
    return Command("analysis", (*argv, "--out", f"{s.gen_out}/generation.json"))


@dataclass(frozen=True)
class CurveSettings(Settings):
    curve_run: Path
    # LABEL=PATH items (a bare path is labelled by its stem); empty: FIRST_STAGE and CURVE_RUN's snapshots
    curve_ckpts: tuple[str, ...]
    curve_n: int
    curve_gen_n: int
    curve_dir: Path
    # empty: CURVE_DIR/results
    results: Path | None


@dataclass(frozen=True)
class Checkpoint:
    label: str
    path: Path


def checkpoint(item: str) -> Checkpoint:
    """An item LABEL=PATH, or a bare path labelled by its file name's stem."""
    label, eq, path = item.partition("=")
    return Checkpoint(label, Path(path)) if eq else Checkpoint(Path(item).stem, Path(item))


def training_checkpoints(run: Path) -> tuple[Checkpoint, ...]:
    """The first stage's weights, then each snapshot of `run`'s stages 2 and 3, labelled by its
    steps after the first stage (each stage numbers its snapshots from 1,000)."""
    found, done = [Checkpoint("ema-step0", FIRST_STAGE)], 0
    for stage, count in STAGE_SNAPSHOTS:
        for k in range(1, count + 1):
            path = run / stage / "snapshots" / f"ema-step{k * 1000}.pt"
            found.append(Checkpoint(f"ema-step{done + k * 1000}", path))
        done += count * 1000
    return tuple(found)


def curve_results(s: CurveSettings) -> Path:
    return s.results or s.curve_dir / "results"


def curve_extraction(s: CurveSettings, ckpt: Checkpoint, split: str) -> Extract:
    """One checkpoint's store of a split (CURVE_N training images, every test image)."""
    limit = s.curve_n if split == "train" else None
    store_out = (s.store_out or s.curve_dir / "cache") / ckpt.label
    at = replace(s, ckpt=ckpt.path, limit=limit, store_out=store_out, args="--micro-batch 64 --no-progress")
    return extraction(at, split)


def curve_probe(s: CurveSettings, ckpt: Checkpoint, point: str, features: str) -> Command:
    """A linear probe of one checkpoint at one point, chosen on a 10% validation carve."""
    train, test = (curve_extraction(s, ckpt, split).cfg.store.out for split in ("train", "test"))
    argv = ("train", "--train", str(train), "--test", str(test), "--features", features, "--head", "linear")
    argv += ("--lr", "1e-3,3e-3,1e-2", "--wd", "0", "--epochs", "10", "--results", str(curve_results(s)))
    return Command("probe", (*argv, "--no-progress", "--name", f"{ckpt.label}-{point}"))


def curve_samples(s: CurveSettings, ckpt: Checkpoint) -> tuple[Command, Command]:
    """CURVE_GEN_N samples of one checkpoint (DDIM, 50 steps), and their FD against the test split."""
    samples, fd = s.curve_dir / "samples" / ckpt.label, curve_results(s) / f"{ckpt.label}-fd.json"
    argv = ("sample", "--model", s.model, "--ckpt", str(ckpt.path), "--num-samples", str(s.curve_gen_n))
    argv += ("--sampler", "ddim", "--steps", "50", "--batch-size", "50", "--no-progress")
    sample = Command("extract", (*argv, "--out", str(samples)))
    argv = ("fid", "--data", s.data, "--split", "test", "--features", f"classifier:{CLASSIFIER}")
    return sample, Command("analysis", (*argv, "--fake", str(samples), "--no-progress", "--out", str(fd)))


@experiment("demo-curve", cls=CurveSettings)
def demo_curve(s: CurveSettings) -> Steps:
    """representation over training: for each checkpoint of CURVE_CKPTS that exists (items
    LABEL=PATH; by default the first stage's exported EMA as ema-step0, then make train-demo's
    stage 2 snapshots in CURVE_RUN, ema-step1000 to 4000, and stage 3's, 5000 to 10000), linear-probe
    test top-1 at the encoder's best point (t=10, b=9, full map) and at the paper's (t=150, b=24,
    full 2x2 map), chosen on a 10% validation carve of CURVE_N training images, on all 10,000 test
    images; and the FD, precision and recall of CURVE_GEN_N samples (DDIM, 50 steps) against the
    test split in the classifier's features. Then one table and one figure over the checkpoints in
    their order. Steps are skipped when their output exists, so it resumes, and it can be rerun as
    more snapshots appear.

    Stores, results and samples go under CURVE_DIR (cache/LABEL, results, samples/LABEL) unless
    STORE_OUT (then STORE_OUT/LABEL) or RESULTS is given."""
    ckpts = tuple(map(checkpoint, s.curve_ckpts)) or training_checkpoints(s.curve_run)
    results = curve_results(s)
    for split in ("train", "test"):
        for ckpt in (c for c in ckpts if c.path.exists()):
            step = curve_extraction(s, ckpt, split)
            if not made(step.cfg.store.out):
                yield step
    for point, features in CURVE_POINTS:
        for ckpt in (c for c in ckpts if c.path.exists()):
            if not (results / f"{ckpt.label}-{point}.json").exists():
                yield curve_probe(s, ckpt, point, features)
    for ckpt in (c for c in ckpts if c.path.exists()):
        yield curve_samples(s, ckpt)[0]
    for ckpt in (c for c in ckpts if c.path.exists()):
        if not (results / f"{ckpt.label}-fd.json").exists():
            yield curve_samples(s, ckpt)[1]
    yield curve_table(results)


def curve_table(results: Path) -> Command:
    """One table and one figure over the checkpoints, in their order."""
    title = "demo-fmnist over training: linear probe (t=10 b=9; t=150 b=24) and FD"
    argv = ("table", "--rows-from", f"{results}/{{row}}-{{head}}.json", "--head", "best,paper")
    argv += ("--fd-from", f"{results}/{{row}}-fd.json", "--plot", f"{results}/curve.png", "--title", title)
    return Command("analysis", (*argv, "--out", f"{results}/curve.md"))


@dataclass(frozen=True)
class TrainSettings(Settings):
    train_run: Path
    train_threads: int
    weights_out: Path
    stage_export: str  # more `extract export` options of every stage


@dataclass(frozen=True)
class Stage:
    """One stage of the demo's training: from the last stage's export (none: random init)."""

    name: str
    max_images: int
    lr: str
    options: tuple[str, ...] = ()


# 15,000 steps of batch 64: stage 2 follows a 10,000-step cosine schedule and stops after step 4,000;
# stage 3 runs 6,000 steps from the lr that schedule had reached
TRAIN_STAGES = (
    Stage("stage1", 320_000, "1e-3"),
    Stage("stage2", 640_000, "3e-4", ("--stop-step", "4000", "--keep-every", "1000")),
    Stage("stage3", 384_000, "2.12e-4", ("--keep-every", "1000")),
)


@experiment("train-demo", cls=TrainSettings)
def train_demo(s: TrainSettings) -> Steps:
    """the shipped demo weights from scratch, in the three stages they were trained in (15,000
    steps of batch 64 in all; about 5.5 h on 2 CPU cores): 5,000 steps from random init, then two
    continuations, each from the last stage's EMA with a fresh AdamW: the first follows a
    10,000-step cosine schedule at lr 3e-4 and stops after step 4,000; the second runs 6,000 steps
    from the lr that schedule had reached (2.12e-4). Every stage resumes from its run folder, and
    the exported EMA of the last one is the weights file, fp16, with its log and settings beside it"""
    init: tuple[str, ...] = ()
    for stage in TRAIN_STAGES:
        run = s.train_run / stage.name
        argv = ("train", *init, "--out", str(run), "--max-images", str(stage.max_images), "--lr", stage.lr)
        yield Command("extract", (*argv, *stage.options, "--threads", str(s.train_threads), *more(s.args)))
        export = s.weights_out if stage is TRAIN_STAGES[-1] else s.train_run / f"{stage.name}.pt"
        yield Command("extract", ("export", "--run", str(run), "--to", str(export), *more(s.stage_export)))
        init = ("--init", str(export))
