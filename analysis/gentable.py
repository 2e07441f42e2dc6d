"""The generation table: each sample set's Fréchet distance, precision, recall and class balance beside the
linear-probe accuracy of the same model and weights (torch-free: reads JSON and CSV only).

Each row comes from an `analysis fid --out` JSON; the model and weights of a sample set are read
from the `samples.json` that `extract sample` wrote beside it, and the probe accuracy is the
validation-best row of a probe results table with the same model and weights, if one is given.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

COLUMNS = [
    "label",
    "model",
    "weights",
    "sampler",
    "steps",
    "samples",
    "real",
    "features",
    "metric",
    "fd",
    "precision",
    "recall",
    "kid",
    "kid_std",
    "inception_score",
    "inception_score_std",
    "class_tv",
    "probe_test_top1",
    "probe_features",
    "feature_net_test_top1",
    "notes",
]


def _provenance(fake: dict) -> dict:
    """The provenance `extract sample` wrote for a sample set (empty for other image sets)."""
    path = Path(fake.get("path", ""))
    for folder in (path, path.parent):
        meta = folder / "samples.json"
        if meta.is_file():
            return json.loads(meta.read_text()).get("provenance", {})
    return {}


def _read_record(path: Path, what: str, keys: tuple[str, ...]) -> dict:
    """A JSON record with the given keys, or one ValueError naming the file and what it should be."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not all(k in record for k in keys):
        raise ValueError(f"{path}: not a {what} (expected the keys {', '.join(keys)})")
    return record


def _best_probe(rows: list[dict], model: str, weights: str) -> dict | None:
    """The validation-best probe row of the same model and weights. A weights file named with its
    hash is one trained model whichever part of it ran: a GAN's samples come from its generator and
    record the GAN, its probe rows come from its encoder and record the encoder, and both name the
    same file. Labels without a hash ("random-init", "none") match only with the same model."""
    same = [r for r in rows if r.get("model") == model and r.get("weights") == weights]
    if not same and "@" in weights:
        same = [r for r in rows if r.get("weights") == weights]
    return max(same, key=lambda r: float(r["val_top1"])) if same else None


def _part(pair, i: int, digits: int):
    return None if not pair else round(pair[i], digits)


def generation_rows(
    results: list[tuple[str, str | Path]],
    probe_table: str | Path | None = None,
    feature_net: str | Path | None = None,
) -> list[dict]:
    """One row per (label, fid JSON). `feature_net` is the classifier's training record (its
    .json), whose test accuracy says how good the feature space is."""
    probes = []
    if probe_table is not None:
        if not Path(probe_table).is_file():
            raise FileNotFoundError(
                f"probe results table not found: {probe_table} (written by `probe train`)"
            )
        with open(probe_table, newline="") as f:
            probes = list(csv.DictReader(f))
        if probes and not {"model", "weights", "val_top1", "test_top1", "features"} <= set(probes[0]):
            raise ValueError(
                f"{probe_table}: not a probe results table "
                "(needs model, weights, features, val_top1, test_top1 columns)"
            )
    net_acc = (
        _read_record(Path(feature_net), "feature classifier's training record", ("test_top1",))["test_top1"]
        if feature_net
        else None
    )
    rows = []
    for label, path in results:
        r = _read_record(
            Path(path),
            "Fréchet distance result (written by `analysis fid --out`)",
            ("fake", "real", "n_fake", "n_real", "features", "metric", "fd", "precision", "recall"),
        )
        prov = _provenance(r["fake"])
        real = r["real"]
        real_text = f"{real.get('data', real.get('path', '?'))} {real.get('split', '')}".strip() + (
            f" ({real['half']} half)" if real.get("half") else ""
        )
        model, weights = prov.get("model", "-"), prov.get("weights", "-")
        probe = _best_probe(probes, model, weights)
        rows.append(
            {
                "label": label,
                "model": model,
                "weights": weights,
                "sampler": prov.get("sampler", "-"),
                "steps": prov.get("steps", "-"),
                "samples": r["n_fake"],
                "real": f"{real_text}, {r['n_real']} images",
                "features": r["features"].get("features"),
                "metric": r["metric"],
                "fd": round(r["fd"], 3),
                "precision": None if r["precision"] is None else round(r["precision"], 3),
                "recall": None if r["recall"] is None else round(r["recall"], 3),
                "kid": _part(r.get("kid"), 0, 5),
                "kid_std": _part(r.get("kid"), 1, 5),
                "inception_score": _part(r.get("inception_score"), 0, 3),
                "inception_score_std": _part(r.get("inception_score"), 1, 3),
                "class_tv": None if r.get("class_tv") is None else round(r["class_tv"], 3),
                "probe_test_top1": probe["test_top1"] if probe else None,
                "probe_features": probe["features"] if probe else None,
                "feature_net_test_top1": net_acc,
                "notes": "; ".join(r.get("notes", [])),
            }
        )
    return rows


def write_table(rows: list[dict], out: str | Path) -> tuple[Path, Path]:
    """The table as JSON (out) and CSV (beside it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"format": "diffprobe-generation-table", "columns": COLUMNS, "rows": rows}, indent=1)
        + "\n"
    )
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out, out.with_suffix(".csv")


def read_table(path: str | Path) -> list[dict]:
    data = json.loads(Path(path).read_text())
    if data.get("format") != "diffprobe-generation-table":
        raise ValueError(f"{path} is not a generation table (written by `analysis gen-table`)")
    return data["rows"]


def markdown(rows: list[dict]) -> list[str]:
    """The table as Markdown lines (for the report)."""

    def cell(v):
        return "-" if v is None or v == "" else str(v)

    lines = [
        "| samples | weights | sampler, steps | n | vs real | FD | precision | recall | KID | IS | class TV "
        "| probe test top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kid = "-" if r.get("kid") is None else f"{r['kid']} +- {r['kid_std']}"
        isc = (
            "-"
            if r.get("inception_score") is None
            else f"{r['inception_score']} +- {r['inception_score_std']}"
        )
        lines.append(
            f"| {r['label']} | {r['weights']} | {r['sampler']}, {r['steps']} | {r['samples']} | {r['real']} "
            f"| {r['fd']} | {cell(r['precision'])} | {cell(r['recall'])} | {kid} | {isc} "
            f"| {cell(r.get('class_tv'))} | {cell(r['probe_test_top1'])} |"
        )
    notes = sorted({n for r in rows for n in str(r.get("notes") or "").split("; ") if n})
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])
