"""The user's three commands and the demo: extract, probe, cka, demo."""

from __future__ import annotations

from dataclasses import replace

from diffprobe.experiments.builders import extraction, more, opt, store_folder, train_test
from diffprobe.experiments.registry import Steps, experiment
from diffprobe.experiments.settings import Settings, defaults, format_value, record_path, record_values
from diffprobe.experiments.steps import Command, Need, Record, Say
from diffprobe.experiments.stores import made, pixel_path


@experiment("extract")
def extract(s: Settings) -> Steps:
    """features of every split at T, B and POOL (the paper's coordinates by default), recorded
    for a bare probe or cka"""
    for split in s.splits:
        step = extraction(s, split)
        yield Say(f"== {step.cfg.store.out}")
        yield step
    yield Record(record_path({"out": s.out}), record_values(s))


@experiment("probe", reads_record=True)
def probe(s: Settings) -> Steps:
    """heads on the last extraction's stores, each head with its recipe's defaults unless LR=,
    WD= are given"""
    train, test = (extraction(s, split).cfg.store.out for split in train_test(s))
    model = "" if s.model == defaults().model else f" MODEL={s.model}"
    limit = f" LIMIT={s.limit}" if s.limit else ""
    coords = f"T={format_value(s.t)} B={format_value(s.b)} POOL={format_value(s.pool)}"
    yield Need(train, f"no cache at {train}: run 'make extract {coords}{model}{limit}' first")
    argv = ["train", "--train", str(train), "--test", str(test), "--head", s.head]
    argv += [*opt("--lr", s.lr), *opt("--wd", s.wd), "--recipe", s.recipe, "--results", str(s.results)]
    yield Command("probe", (*argv, *opt("--name", s.name), *more(s.probe_args)))


def cka_block(s: Settings) -> str:
    """The block of the timestep map: CKA_B, else the first B ('all': the paper's block, 24)."""
    b = s.cka_b or s.b[0]
    return "24" if b == "all" else b


@experiment("cka", reads_record=True)
def cka(s: Settings) -> Steps:
    """the paper's CKA figures from the cache at the last extraction's model and coordinates:
    every block against every other at the first t (global average pool: the demo's deepest maps
    are 1x1), every timestep of CKA_TS against every other at the first b and pool, and the
    trained weights against the random-weight control, block by block. Missing stores are
    extracted first (one forward per t gives every block) on CKA_LIMIT images of the test split."""
    t = s.cka_t if s.cka_t is not None else s.t[0]
    b, pool = cka_block(s), s.cka_pool or s.pool[0]
    split = s.cka_split or s.splits[-1]
    base = replace(s, limit=s.cka_limit or s.limit or 2000, store_out=s.store_out or s.out / "cka")
    blocks = extraction(replace(base, t=(t,), b=("all",), pool=("1",)), split, keyed=False)
    ts = tuple(dict.fromkeys((*s.cka_ts, t)))
    timesteps = extraction(replace(base, t=ts, b=(b,), pool=(pool,)), split, keyed=False)
    random = extraction(
        replace(base, t=(t,), b=("all",), pool=("1",), random=True, ckpt=None), split, keyed=False
    )
    yield from (blocks, timesteps, random)
    figure = {kind: f"{s.cka_out}/{s.model}_{kind}.png" for kind in ("blocks", "timesteps", "vs_random")}
    maps = [
        (blocks, s.model, "blocks", f"linear CKA between blocks, t={t}, global average pool"),
        (timesteps, s.model, "timesteps", f"linear CKA between timesteps, b={b}, pool {pool}"),
    ]
    for step, labels, kind, title in maps:
        store = str(step.cfg.store.out)
        argv = ("cka", "--no-progress", "--store", store, "--labels", labels, "--out", figure[kind])
        yield Command("analysis", (*argv, "--title", f"{s.model}: {title}"))
    stores = ("--store", str(blocks.cfg.store.out), "--store", str(random.cfg.store.out))
    title = f"{s.model}: linear CKA, trained vs random weights, t={t}, global average pool"
    yield Command(
        "analysis",
        (
            "cka",
            "--no-progress",
            *stores,
            "--labels",
            "trained,random",
            "--out",
            figure["vs_random"],
            "--title",
            title,
        ),
    )
    yield Say(f"figures: {', '.join(figure.values())} (JSON beside each)")


@experiment("demo")
def demo(s: Settings) -> Steps:
    """the whole pipeline on the shipped demo model at its own best point (chosen on validation
    by the sweep; see extract/weights/MODEL_CARD.md) unless T, B or POOL is given: extract
    (trained weights and the random-weight control), raw pixels, linear probes of each, the CKA
    figures, and the table"""
    yield from extract(replace(s, random=True))
    yield from extract(replace(s, random=False))
    pixels = [pixel_path(store_folder(s), s.data, split, s.limit) for split in train_test(s)]
    for split, path in zip(train_test(s), pixels):
        if not made(path):
            yield Command(
                "extract",
                ("pixels", "--data", s.data, "--split", split, *opt("--limit", s.limit), "--out", str(path)),
            )
    for random, name in ((False, "demo-trained"), (True, "demo-random")):
        yield from probe(replace(s, random=random, probe_args=f"--no-progress --name {name}"))
    train, test = map(str, pixels)
    argv = ("train", "--train", train, "--test", test, "--head", s.head, "--results", str(s.results))
    yield Command("probe", (*argv, "--name", "demo-pixels", "--no-progress"))
    for other in ("random", "pixels"):
        yield Command(
            "analysis",
            ("diff", "--a", f"{s.results}/demo-trained.json", "--b", f"{s.results}/demo-{other}.json"),
        )
    yield from cka(replace(s, random=False))
    yield Command("probe", ("table", "--results", str(s.results), "--last", "3"))
