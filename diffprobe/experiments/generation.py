"""The demo model as a generator: its samples scored against the test split (demo-gen)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings
from diffprobe.experiments.steps import Command, Copy, Say

# the card run's probe table (make card-demo), else the one committed beside the model card
CARD_PROBES = Path("results/card/probe_results.csv")
EVIDENCE_PROBES = Path("evidence/demo-card.runs.csv")


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
