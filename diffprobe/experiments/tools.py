"""One command each: the report, samples, fine-tuning."""

from __future__ import annotations

from diffprobe.experiments.builders import more, opt, train_test, weights
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings, format_value
from diffprobe.experiments.steps import Command


@experiment("report")
def report(s: Settings) -> Steps:
    """one report from whatever results exist (report/report.md and the self-contained
    report/report.html): every probe results table under results/, the CKA maps, the generation
    table; it names what is missing"""
    title = s.report_title or f"diffprobe report: {s.model} on {s.data}"
    yield Command(
        "analysis",
        ("report", "--results", "results", "--cka", str(s.cka_out), "--out", "report", "--title", title),
    )


@experiment("sample")
def sample(s: Settings) -> Steps:
    """SAMPLE_N images from any preset (the shipped demo weights by default), seeded per image
    and resumable by shards"""
    name = f"{s.model}_{s.sampler}{s.sample_steps}_n{s.sample_n}{'_random' if s.random else ''}"
    out = s.sample_out or f"results/samples/{name}"
    argv = ["sample", "--model", s.model, *weights(s), "--num-samples", str(s.sample_n)]
    argv += ["--steps", str(s.sample_steps), "--sampler", s.sampler, "--out", str(out)]
    yield Command("extract", (*argv, *more(s.sample_args)))


@experiment("finetune")
def finetune(s: Settings) -> Steps:
    """fine-tune the U-Net up to block B with a head (the table's 'U-Net encoder' row); the U-Net
    runs inside the training loop, so nothing is cached"""
    t, b = format_value(s.t), format_value(s.b)
    train, test = train_test(s)
    argv = ["finetune", "--out", f"{s.ft_out}/{s.model}_t{t}_b{b}_{s.head}", "--model", s.model]
    argv += [*opt("--ckpt", s.ckpt), "--data", s.data, *opt("--data-root", s.data_root)]
    argv += ["--train-split", train, "--test-split", test, "-t", t, "-b", b, "--pool", format_value(s.pool)]
    argv += ["--head", s.head, *opt("--limit", s.limit), "--results", f"{s.results}/finetune"]
    yield Command("probe", (*argv, *more(s.finetune_args)))
