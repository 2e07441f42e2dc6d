"""The demo's results tables, written from the committed evidence files: the seed table
(`make demo-table`), the all-images single runs (`make card-demo`), what each of the three
"best" numbers is, `make demo`'s printed table, the sweep's sentence and the rows beside them.
Each function takes the repository root and returns Markdown."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from analysis.docs_format import (
    Stat,
    best_member,
    blocks_text,
    grid_text,
    interval,
    interval_labelled,
    one_run,
    read_csv,
    read_json,
    row,
    table,
)

TABLE = "evidence/demo-table/table.json"
RUNS = "evidence/demo-card.runs.csv"
MEMBERS = "evidence/demo-card.members.csv"
BIGAN_MEMBERS = "evidence/demo-card-bigan.members.csv"
VS_RANDOM = "evidence/demo-table/bigan-minus-random-{head}.json"
DEMO_LOG = "evidence/demo/make-demo.txt"
SWEEP = "evidence/demo-sweep.members.csv"
# the card's single runs: run name in the runs CSV -> (its members' run name, what it is)
CARD_RUNS = {
    "card-trained": ("trained", "demo-fmnist, trained (the shipped 15,000 steps)", MEMBERS),
    "card-trained-20ep": ("trained-20-epochs", "demo-fmnist, trained, `make probe`'s grid", MEMBERS),
    "card-bigan": ("bigan", "the BiGAN baseline's encoder", BIGAN_MEMBERS),
    "card-random": ("random-weights", "same architecture, random weights", MEMBERS),
    "card-pixels": ("pixels", "raw pixels (28x28), logistic regression", MEMBERS),
}


def _cell(seed_table: dict, name: str, head: str) -> dict:
    return next(c for c in seed_table["cells"] if c["row"] == name and c["head"] == head)


def _points(points: list[str]) -> str:
    counts = Counter(points)
    if len(counts) == 1:
        return f"{points[0]} (every run)"
    return ", ".join(f"{p} ({n} of {len(points)} runs)" for p, n in counts.most_common())


def _region(root: Path, run_json: str) -> str:
    """The (t, b, pool) keys a results file's grid searched, as t, blocks and pools."""
    members = read_json(root, run_json)["members"]
    keys = {m["feature_set"] for m in members}
    ts = sorted({k.split("/")[0][1:] for k in keys}, key=int)
    blocks = blocks_text(k.split("/")[1][1:] for k in keys)
    return f"{', '.join(ts)}, b={blocks}, {_pools(k.split('/')[2].removeprefix('p') for k in keys)}"


def _pools(pools) -> str:
    found = sorted(set(pools))
    return f"pool {found[0]}" if len(found) == 1 else f"pools {', '.join(found)}"


def seed_table(root: Path) -> str:
    """`make demo-table`'s cells over seeds, each difference from the reference with its interval."""
    data = read_json(root, TABLE)
    ref, heads = data["reference"], data["heads"]
    diffs = {(d["row"], d["head"]): d for d in data["differences"]}
    ns = {len(c["top1"]) for c in data["cells"]}
    per_cell = len(ns) > 1  # a label per cell where the cells' numbers of seeds differ
    label = "" if per_cell else f", {Stat(tuple(data['cells'][0]['top1'])).label()}"
    header = ["representation", "chosen on validation (linear)"]
    for head in heads:
        header += [f"{head} test top-1{label}", f"{head}: difference from {ref}, 95% interval"]
    rows = []
    for name in data["rows"]:
        line = [name, _points(_cell(data, name, "linear")["points"])]
        for head in heads:
            stat = Stat(tuple(_cell(data, name, head)["top1"]))
            d = diffs.get((name, head))
            line += [
                stat.labelled() if per_cell else stat.text(),
                "-" if d is None else interval(d["points"], d["low"], d["high"]),
            ]
        rows.append(line)
    first = _cell(data, ref, "linear")["runs"][0]
    run = read_json(root, first)
    attention = read_json(root, _cell(data, ref, "attention")["runs"][0])["config"]
    d0 = data["differences"][0]
    vs_random = [
        f"{head} {interval_labelled(read_json(root, VS_RANDOM.format(head=head)))}" for head in heads
    ]
    return "\n".join(
        [
            table(header, rows),
            "",
            f"All {run['stores']['train']['rows'] + run['val']['rows']:,} training images, a "
            f"{run['val']['rows']:,}-image validation carve choosing each run's key and head, all "
            f"{run['test']['rows']:,} test images. Linear heads: {grid_text(run['config'])}, over each row's "
            f"region (the best block's: t={_region(root, first)}); attention heads: "
            f"{grid_text(attention)}, at the key the run's linear head chose. Each run pairs a noise seed "
            f"with a head seed. Differences: paired bootstrap over the {d0['rows']:,} test images with every "
            f"run of both sides ({d0['resamples']:,} resamples), so an interval holds the test set's "
            "uncertainty and the sd the seeds' spread "
            "([`evidence/demo-table/`](evidence/demo-table/table.md)). "
            f"The BiGAN minus random weights: {'; '.join(vs_random)}.",
        ]
    )


def _member_rows(root: Path, name: str) -> list[dict]:
    members_run, _, members_file = CARD_RUNS[name]
    return [m for m in read_csv(root, members_file) if m["run"] == members_run]


def _searched(members: list[dict]) -> str:
    if members[0]["head"] == "logreg":
        return f"the image itself, {len(members)} values of C"
    ts = sorted({m["t"] for m in members}, key=int)
    return (
        f"t={', '.join(ts)}, b={blocks_text(m['b'] for m in members)}, {_pools(m['pool'] for m in members)}"
    )


def single_runs(root: Path) -> str:
    """`make card-demo`'s all-images runs: one run each, every member in the CSVs."""
    runs = read_csv(root, RUNS)
    rows = []
    for name, (_, label, _) in CARD_RUNS.items():
        r = row(runs, "name", name)
        chosen = r["features"] + ("" if not r["lr"] else f", lr {float(r['lr']):g}")
        chosen += f", wd {float(r['wd']):g}" if r["wd"] and float(r["wd"]) else ""
        epochs = f"{r['epochs']} epochs" if r["epochs"] else "logistic regression"
        rows.append(
            [
                label,
                f"{_searched(_member_rows(root, name))} ({epochs})",
                chosen,
                r["val_top1"],
                r["test_top1"],
            ]
        )
    data = read_json(root, TABLE)
    own = Stat(tuple(_cell(data, "random weights", "linear")["top1"]))
    own_point = _cell(data, "random weights", "linear")["points"][0]
    random_members = _member_rows(root, "card-random")
    return "\n".join(
        [
            table(
                [
                    "features (all images)",
                    "searched over",
                    "chosen on validation",
                    "val top-1",
                    "test top-1, one run",
                ],
                rows,
            ),
            "",
            f"One run each ([`{RUNS}`]({RUNS}); every member in [`{MEMBERS}`]({MEMBERS}) and "
            f"[`{BIGAN_MEMBERS}`]({BIGAN_MEMBERS})). The random-weight row was searched over the trained "
            f"model's region (b={blocks_text(m['b'] for m in random_members)}), not its own: over its own "
            f"region ({own_point}) it scores {own.labelled()} (`make demo-table`).",
        ]
    )


def bests(root: Path) -> str:
    """The three "best" numbers of the demo, one sentence each."""
    data = read_json(root, TABLE)
    cell = _cell(data, "diffusion (best block)", "linear")
    stat = Stat(tuple(cell["top1"]))
    run = read_json(root, cell["runs"][0])
    runs = read_csv(root, RUNS)
    card, card20 = row(runs, "name", "card-trained"), row(runs, "name", "card-trained-20ep")
    card_members = _member_rows(root, "card-trained")
    grid20 = _member_rows(root, "card-trained-20ep")
    lrs = "{" + ", ".join(sorted({f"{float(m['lr']):g}" for m in grid20}, key=float)) + "}"
    wds = "{" + ", ".join(sorted({f"{float(m['wd']):g}" for m in grid20}, key=float)) + "}"
    return "\n".join(
        [
            f"- **{stat.text()}** ({stat.label()}; `make demo-table`): the number to quote. Each seed "
            f"searches the sweep's six best blocks (t={_region(root, cell['runs'][0])}) with "
            f"{grid_text(run['config'])} and chooses on validation.",
            f"- **{card['test_top1']}** (one run; `make card-demo`): the model card's first all-images "
            f"run, a smaller grid (lr only, {card['epochs']} epochs) over "
            f"{_searched(card_members)}, which chose {card['features']}.",
            f"- **{card20['test_top1']}** (one run; `make demo` and the card's 20-epoch run): lr {lrs} x "
            f"wd {wds}, {card20['epochs']} epochs, at the one key {card20['features']} that the "
            f"{card['test_top1']} run chose; a single seed of the seed table's grid at that key.",
        ]
    )


def demo_run(root: Path) -> str:
    """The table and the differences `make demo` printed on a fresh clone."""
    lines = (root / DEMO_LOG).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model ") and "test top-1" in line)
    shown = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        shown.append(line)
    diffs = [line.split(" (paired")[0] for line in lines if " - demo-" in line and "95% interval" in line]
    rows = next(line for line in lines if "paired bootstrap over" in line).split("over ")[1].split(" test")[0]
    rows = f"{int(rows):,}"
    said = (
        f"Before the table it prints each difference with a paired-bootstrap 95% interval over the {rows} "
        "test images (`python -m analysis diff`; one run of each head, so the interval is the test set's "
        f"uncertainty, not the seeds'; [`{DEMO_LOG}`]({DEMO_LOG})):"
    )
    return "\n".join(["```", *shown, "```", "", said, "", "```", *diffs, "```"])


def sweep(root: Path) -> str:
    """The sweep's sentence: each t's validation-best member, and the paper's point."""
    members = read_csv(root, SWEEP)

    def best_at(run: str, **where) -> dict:
        return best_member(
            [m for m in members if m["run"] == run and all(m[k] == v for k, v in where.items())]
        )

    ts = sorted({m["t"] for m in members if m["run"] == "trained"}, key=int)
    trained = [float(best_at("trained", t=t)["test_top1"]) for t in ts]
    random = [float(best_at("random-weights", t=t)["test_top1"]) for t in ts]
    paper = {
        run: float(best_at(run, t="150", b="24", pool="2")["test_top1"])
        for run in ("trained", "random-weights")
    }
    n_test = "2,000"
    return (
        f"On the sweep (3,000 training and {n_test} test images, every block, t and pool; one run per "
        f"member, [`{SWEEP}`]({SWEEP})), each t's validation-best member scores "
        f"{', '.join(f'{x:.2f}' for x in trained)} at t = {', '.join(ts)}, and the random control's "
        f"{', '.join(f'{x:.2f}' for x in random)}: it falls faster. At the paper's point (t=150, b=24, "
        f"pool 2) the demo scores {paper['trained']:.2f} against {paper['random-weights']:.2f} for random "
        f"weights."
    )


def other_rows(root: Path) -> str:
    """Fine-tuning at matched budgets, generation, and the BiGAN at 10,000 training images."""
    ft = read_json(root, "evidence/demo-finetune-matched/finetuned-minus-frozen.json")
    gen = read_csv(root, "evidence/demo-gen/generation.csv")
    fd = {g["label"]: float(g["fd"]) for g in gen}
    bigan = read_json(root, "evidence/bigan-curve/chosen.json")
    unet = read_json(root, "evidence/demo-curve/ema-step10000-best.json")
    weights = unet["stores"]["train"]["key"]["weights"]
    dtype = unet["stores"]["train"]["key"]["model"].get("dtype") or unet["stores"]["train"]["key"].get(
        "dtype"
    )
    rows = [
        [
            "U-Net encoder fine-tuned end to end up to b=9 with a linear head, against a frozen linear head "
            "at matched budgets (`make demo-finetune-matched`: 12,000 training images, no augmentation, the "
            "same head-lr grid, 15 epochs, validation selection)",
            f"{ft['a_runs'][0]:.2f} vs {ft['b_runs'][0]:.2f} test top-1: {interval_labelled(ft)}",
        ],
        [
            "generation: Fréchet distance to Fashion-MNIST test in a small classifier's features, 5,000 "
            "DDIM-50 samples (`make demo-gen`)",
            f"{fd['trained']:.2f} (random weights: {fd['random-init']:,.1f}; two halves of the test set: "
            f"{fd['test-half-floor']:.2f}; BiGAN: {fd['BiGAN']:.2f}); one sample set each",
        ],
        [
            "the BiGAN's encoder on 10,000 training images ([card](extract/weights/bigan-fmnist.md)), "
            "searched over its own grid (every stage, pools 1, 2, 4, full), against the U-Net at one "
            "fixed key",
            f"{one_run(bigan['test']['top1'])} at {bigan['head']['feature_set']}; the U-Net "
            f"{one_run(unet['test']['top1'])} at {unet['head']['feature_set']}, from the EMA snapshot "
            f"`{weights['checkpoint']}` in fp32 (features in {dtype}; the shipped file is its fp16 "
            "export). Not one protocol: the seed table above compares both over their own regions",
        ],
    ]
    return table(["row", "result"], rows)


def workflow(root: Path) -> str:
    """The cached-views benchmark's linear heads: seed means with 95% t intervals."""
    data = read_json(root, "evidence/bench/workflow.json")
    arms = {a["arm"]: a for a in data["summary"]}
    online = arms["on-line, crop+flip+noise"]["test_top1"]["linear"]["values"]
    cached = arms["cached, 8 views"]["test_top1"]["linear"]["values"]
    a, b = Stat(tuple(online)), Stat(tuple(cached))
    paired = Stat(tuple(y - x for x, y in zip(online, cached)))

    def ci(s: Stat, sign: bool = False) -> str:
        lo, hi = s.t_interval()
        return interval(s.mean, lo, hi) if sign else f"{s.mean:.2f} [{lo:.2f}, {hi:.2f}]"

    return (
        f"Cached views against on-line training (`make bench-workflow`, [`evidence/bench/workflow.json`]"
        f"(evidence/bench/workflow.json); t=10, b=9, first-stage weights, {data['settings']['steps']:,} SGD "
        f"steps for every arm, {a.n} seeds, {data['test_rows']:,} test images): linear test top-1 "
        f"{ci(a)} on-line with fresh crop, flip and noise against {ci(b)} from 8 cached views, paired "
        f"{ci(paired, sign=True)} (mean over {a.n} seeds, 95% t interval in brackets)."
    )
