"""The model cards' headline tables, written from the committed evidence files: the demo's bars
(over seeds first, then the single runs), generation beside probe accuracy, the BiGAN's snapshots
and its comparison with the U-Net. Each function takes the repository root and returns Markdown."""

from __future__ import annotations

from pathlib import Path

from analysis.docs_format import Stat, best_member, interval, one_run, read_csv, read_json, row, table
from analysis.docs_results import BIGAN_MEMBERS, RUNS, TABLE, VS_RANDOM

# the bars this card set for the demo model before it was measured (targets, not results)
BEST_AT_LEAST = 92.5
OVER_RANDOM_AT_LEAST = 3.0
OVER_PIXELS_AT_LEAST = 7.0
BIGAN_CURVE = "evidence/bigan-curve"


def _seeds(data: dict, name: str, head: str = "linear") -> Stat:
    cell = next(c for c in data["cells"] if c["row"] == name and c["head"] == head)
    return Stat(tuple(cell["top1"]))


def _lead_over(data: dict, name: str) -> tuple[float, float, float]:
    """The reference row's lead over `name` (the table stores `name` minus the reference)."""
    d = next(d for d in data["differences"] if d["row"] == name and d["head"] == "linear")
    return -d["points"], -d["high"], -d["low"]


def _verdict(points: float, low: float, bar: float) -> str:
    if low >= bar:
        return "**met**, the whole interval above it"
    return "met by the point estimate, not by the interval" if points >= bar else "**not met**"


def bars(root: Path) -> str:
    """The card's bars: over seeds first (they decide), then what the single runs said."""
    data = read_json(root, TABLE)
    best = _seeds(data, "diffusion (best block)")
    runs = read_csv(root, RUNS)
    card, card20 = row(runs, "name", "card-trained"), row(runs, "name", "card-trained-20ep")
    rnd, pix = row(runs, "name", "card-random"), row(runs, "name", "card-pixels")
    top = float(card["test_top1"])
    passing = sum(v >= BEST_AT_LEAST for v in best.values)
    over_random, over_pixels = _lead_over(data, "random weights"), _lead_over(data, "pixels")
    rows = [
        [
            f"best linear head at least {BEST_AT_LEAST}%",
            f"{best.text()}",
            "**met**" if best.mean >= BEST_AT_LEAST else f"**not met** ({passing} of {best.n} runs pass)",
            f"{card['test_top1']} (`make card-demo`), {card20['test_top1']} (`make demo`'s grid)",
        ],
        [
            f"random weights beaten by at least {OVER_RANDOM_AT_LEAST:g} points",
            f"{interval(*over_random)} (random weights over their own region)",
            _verdict(over_random[0], over_random[1], OVER_RANDOM_AT_LEAST),
            f"+{top - float(rnd['test_top1']):.2f} ({card['test_top1']} vs {rnd['test_top1']}, "
            "random weights searched over the trained model's region)",
        ],
        [
            f"raw pixels beaten by at least {OVER_PIXELS_AT_LEAST:g} points",
            f"{interval(*over_pixels)}",
            _verdict(over_pixels[0], over_pixels[1], OVER_PIXELS_AT_LEAST),
            f"+{top - float(pix['test_top1']):.2f} ({card['test_top1']} vs {pix['test_top1']}, "
            "logistic regression)",
        ],
    ]
    return "\n".join(
        [
            table(
                [
                    "bar",
                    f"over seeds: {best.label()}; a lead as its 95% interval",
                    "verdict, over seeds",
                    "single runs (one run each), for the record",
                ],
                rows,
            ),
            "",
            "The seeds decide (`make demo-table`, "
            "[the table below](#the-papers-table-over-seeds-make-demo-table)); "
            "a lead's interval is the paired bootstrap over the test images.",
        ]
    )


def generation(root: Path) -> str:
    """`make demo-gen`'s distances beside each model's probe accuracy over seeds."""
    gen = {g["label"]: g for g in read_csv(root, "evidence/demo-gen/generation.csv")}
    first = read_json(root, "evidence/demo-gen/fd-trained-first-stage.json")
    first_probe = row(read_csv(root, "evidence/demo-gen/generation-1000.csv"), "label", "trained")
    data = read_json(root, TABLE)
    probe = {
        "trained": _seeds(data, "diffusion (best block)"),
        "random-init": _seeds(data, "random weights"),
        "BiGAN": _seeds(data, "BiGAN"),
    }

    def fd_row(label: str, name: str) -> list[str]:
        g = gen[name]
        stat = probe.get(name)
        return [
            label,
            f"{float(g['fd']):,.2f}",
            f"{float(g['precision']):.3f}",
            f"{float(g['recall']):.3f}",
            "-" if stat is None else stat.labelled(),
        ]

    rows = [
        fd_row("these weights", "trained"),
        [
            "stage 1's weights (5,000 steps)",
            f"{first['fd']:.2f}",
            f"{first['precision']:.3f}",
            f"{first['recall']:.3f}",
            f"{one_run(float(first_probe['probe_test_top1']))} at {first_probe['probe_features']}",
        ],
        fd_row("random weights, same architecture", "random-init"),
        fd_row("the BiGAN baseline ([card](bigan-fmnist.md)), its generator", "BiGAN"),
        fd_row("split-half baseline: test half against test half (5,000 vs 5,000)", "test-half-floor"),
    ]
    return "\n".join(
        [
            table(["weights", "FD (classifier)", "precision", "recall", "linear probe, test top-1"], rows),
            "",
            "FD, precision and recall: one sample set of 5,000 each "
            "([`evidence/demo-gen/`](evidence/demo-gen/generation.csv)). "
            "Probe accuracy: `make demo-table`'s linear heads, each model over its own region, all images; "
            "stage 1's is one run at the card's all-images protocol of the time.",
        ]
    )


def bigan_curve(root: Path) -> str:
    """The BiGAN's snapshots: validation chooses the weights that ship."""
    chosen = read_json(root, f"{BIGAN_CURVE}/chosen.json")
    curve = read_json(root, f"{BIGAN_CURVE}/curve.json")
    rows = []
    for name in curve["rows"]:
        probe = read_json(root, f"{BIGAN_CURVE}/{name}-linear.json")
        fd = read_json(root, f"{BIGAN_CURVE}/{name}-fd.json")
        ships = probe["stores"]["train"]["path"] == chosen["stores"]["train"]["path"]
        step = int(name.rsplit("step", 1)[1])
        cells = [
            f"step {step:,}" + (" (ships)" if ships else ""),
            f"{probe['val']['top1']:.2f}",
            f"{probe['test']['top1']:.2f}",
            probe["head"]["feature_set"],
            f"{fd['fd']:.2f} ({fd['precision']:.2f}, {fd['recall']:.2f})",
            "-" if fd.get("class_tv") is None else f"{fd['class_tv']:.3f}",
        ]
        rows.append([f"**{c}**" for c in cells[:3]] + cells[3:] if ships else cells)
    return table(
        [
            "snapshot",
            "validation top-1 (chooses)",
            "test top-1, one run",
            "chosen point",
            "FD, 1,000 samples (precision, recall)",
            "class TV",
        ],
        rows,
    )


def bigan_summary(root: Path) -> str:
    """The BiGAN against the U-Net and random weights: over seeds first, single runs after."""
    data = read_json(root, TABLE)
    best, bigan, rnd = (_seeds(data, n) for n in ("diffusion (best block)", "BiGAN", "random weights"))
    lead = _lead_over(data, "BiGAN")
    vs_random = read_json(root, VS_RANDOM.format(head="linear"))
    runs = read_csv(root, RUNS)
    card, card_bigan = row(runs, "name", "card-trained"), row(runs, "name", "card-bigan")
    first = row(read_csv(root, "evidence/demo-gen/generation-1000.csv"), "label", "trained")
    members = [m for m in read_csv(root, BIGAN_MEMBERS) if m["run"] == "bigan"]
    stages = []
    for b in sorted({m["b"] for m in members}, key=int):
        m = best_member([m for m in members if m["b"] == b])
        stages.append(f"{'z' if b == '4' else f'stage {b}'} {float(m['test_top1']):.2f}")
    return "\n".join(
        [
            f"- **Over {best.n} seeds** (`make demo-table`: all images, each model over its own region, "
            f"{best.label()}): the U-Net's best block {best.text()}, the BiGAN encoder {bigan.text()}, "
            f"random weights {rnd.text()}. The U-Net leads the BiGAN by {interval(*lead)}, and the BiGAN "
            f"leads random weights by {interval(vs_random['points'], vs_random['low'], vs_random['high'])} "
            "(95% paired-bootstrap intervals over the test images).",
            f"- Single runs (`make card-demo`, one run each): the U-Net's {card['test_top1']} against the "
            f"BiGAN's {card_bigan['test_top1']}, "
            f"+{float(card['test_top1']) - float(card_bigan['test_top1']):.2f}; the U-Net's first 5,000 "
            f"steps scored {first['probe_test_top1']} at {first['probe_features']} "
            f"(+{float(first['probe_test_top1']) - float(card_bigan['test_top1']):.2f}), a smaller grid.",
            f"- Per stage, at its validation-best pool and lr (one run): {', '.join(stages)}. The code z is "
            "the worst of the encoder's layers, as the U-Net's bottleneck is the worst of its blocks.",
        ]
    )
