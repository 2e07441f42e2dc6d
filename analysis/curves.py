"""Accuracy against t, b and pool from a probe run's grid members.

For each value of one axis (say t), the member chosen by validation among those whose
features have that value gives the point: its test accuracy (and its validation
accuracy). Selection never looks at test, so the curves are honest ablations.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

AXES = ("t", "b", "pool")


def _value(member: dict, axis: str):
    values = {f[axis] for f in member["features"]}
    if len(values) != 1:
        return None  # a concatenated feature set spans several values of this axis
    v = values.pop()
    return "full" if v is None else v


def best_per_value(members: list[dict], axis: str) -> dict:
    """axis value -> the validation-best member with that value (ties: first in grid order)."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")
    best: dict = {}
    for m in members:
        v = _value(m, axis)
        if v is None or "val" not in m:
            continue
        if v not in best or m["val"]["top1"] > best[v]["val"]["top1"]:
            best[v] = m
    if not best:
        raise ValueError(f"no grid member has a single {axis} value and a validation score to plot")
    return dict(sorted(best.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))


def plot_curves(
    runs: dict[str, list[dict]], title: str, source: str, log_snr: dict[str, dict] | None = None
) -> plt.Figure:
    """runs: label -> grid members. One panel per axis, test top-1 of the val-best member.
    log_snr: label -> {t: the log-SNR its model saw there}: the t panel's x is then log-SNR, so
    models with different schedules line up at equal noise."""
    lines = source.count("\n") + 2
    fig, axes = plt.subplots(
        1, len(AXES), figsize=(4.6 * len(AXES), 3.2 + 0.18 * lines), constrained_layout=True
    )
    for ax, axis in zip(axes, AXES):
        for label, members in runs.items():
            best = best_per_value(members, axis)
            if axis == "t" and log_snr is not None:
                xs = [log_snr[label][t] for t in best]  # numbers: equal noise at equal x
            else:
                xs = [str(v) for v in best]
            ax.plot(xs, [m["test"]["top1"] for m in best.values()], marker="o", label=label)
        names = {"t": "timestep t", "b": "block b", "pool": "pool p (p x p)"}
        if log_snr is not None:
            names["t"] = "log-SNR the model saw (less noise to the right)"
        ax.set_xlabel(names[axis])
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}\n{source}", fontsize=7)
    return fig


def members_from_table(rows: list[dict]) -> dict[str, list[dict]]:
    """Results-table rows (one per probe run) as member-like records, grouped by model and
    weights, so `best_per_value` and `plot_curves` draw across runs. Rows whose features
    concatenate several keys are left out."""
    runs: dict[str, list[dict]] = {}
    for r in rows:
        if (
            "+" in f"{r.get('t', '')}{r.get('b', '')}{r.get('pool', '')}"
            or not r.get("val_top1")
            or not r.get("test_top1")
        ):
            continue
        pool = None if r["pool"] == "full" else int(r["pool"])
        runs.setdefault(f"{r['model']} ({r['weights']})", []).append(
            {
                "features": [{"t": int(r["t"]), "b": int(r["b"]), "pool": pool}],
                "val": {"top1": float(r["val_top1"])},
                "test": {"top1": float(r["test_top1"])},
            }
        )
    if not runs:
        raise ValueError(
            "the results table has no rows with a single (t, b, pool) and validation and test scores to plot"
        )
    return runs


def member_row(label: str, m: dict) -> dict:
    """One grid member as a flat row: what it was trained on, its validation and test top-1."""
    feats = m["features"]
    joined = lambda axis: "+".join("full" if f[axis] is None else str(f[axis]) for f in feats)  # noqa: E731
    return {
        "run": label,
        "head": m["head"],
        "features": m["feature_set"],
        "t": joined("t"),
        "b": joined("b"),
        "pool": joined("pool"),
        "lr": m.get("lr", ""),
        "wd": m.get("wd", ""),
        "val_top1": m.get("val", {}).get("top1", ""),
        "test_top1": m.get("test", {}).get("top1", ""),
    }


def best_table(runs: dict[str, list[dict]], axis: str) -> list[dict]:
    """For each run and each value of `axis`, the validation-best member as a row."""
    return [
        {"value": v, **member_row(label, m)}
        for label, members in runs.items()
        for v, m in best_per_value(members, axis).items()
    ]
