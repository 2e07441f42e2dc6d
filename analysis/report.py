"""One Markdown report from the user's own results: the paper's table shape, ablation curves
and CKA maps, each figure captioned with the stores and models it came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from analysis.curves import AXES, plot_curves
from probe.tables import read_table

TABLE = "probe_results.csv"


def _curve_runs(results_dir: Path) -> list[tuple[str, dict]]:
    """Probe results whose grid varies t, b or pool (so a curve has more than one point)."""
    runs = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if result.get("format") != "diffprobe-probe-results":
            continue
        values = {axis: {f[axis] for m in result["members"] for f in m["features"]} for axis in AXES}
        if any(len(v) > 1 for v in values.values()):
            runs.append((path.stem, result))
    return runs


def build_report(results_dir: str | Path, cka_dir: str | Path | None, out_dir: str | Path, title: str = "diffprobe report",
                 generation: str | Path | None = None) -> Path:  # fmt: skip
    """Write out_dir/report.md with its figures beside it; returns the report's path."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    table = results_dir / TABLE
    if not table.is_file():
        raise FileNotFoundError(f"no results table at {table}: run `make probe` (or `python -m probe train`) first")
    rows = read_table(table)
    if not rows:
        raise ValueError(f"{table} has no rows to report")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"From `{table}` ({len(rows)} probe runs)" + (f" and the CKA maps in `{cka_dir}`." if cka_dir else "."), ""]
    lines += ["## Accuracy", "", "| method | model | weights | features (t, b, pool) | train rows | test top-1 | test top-5 | val top-1 |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        feats = f"t={r['t']}, b={r['b']}, pool={r['pool']}"
        lines.append(f"| {r['head']} head | {r['model']} | {r['weights']} | {feats} | {r['train_rows']} | {r['test_top1']} | {r['test_top5']} | {r['val_top1']} |")
    lines += ["", "Each row is the grid member chosen on validation; test accuracy was never used to choose.", ""]
    if generation is not None:
        from analysis.gentable import markdown
        from analysis.gentable import read_table as read_generation

        gen = read_generation(generation)
        space = f"{gen[0]['features']}" + (f", a classifier of {gen[0]['feature_net_test_top1']}% test accuracy" if gen and gen[0].get("feature_net_test_top1") else "")
        lines += ["## Generation", "", *markdown(gen), "", f"*Fréchet distance, precision and recall (k=3) in the feature space of {space}; from `{generation}`.*", ""]

    runs = _curve_runs(results_dir)
    if runs:
        lines += ["## Ablations", ""]
        for name, result in runs:
            store = Path(result["stores"]["train"]["path"]).name
            model = result["stores"]["train"].get("provenance", {}).get("preset", "?")
            fig = plot_curves({name: result["members"]}, f"{name}: test top-1 of the validation-best member per value", store)
            fig.savefig(out_dir / f"curves_{name}.png", dpi=110)
            lines += [f"![{name}](curves_{name}.png)", "", f"*{name}: model {model}, store `{store}`.*", ""]
    if cka_dir is not None:
        maps = sorted(Path(cka_dir).glob("*.json"))
        if maps:
            lines += ["## CKA", ""]
        for path in maps:
            png = path.with_suffix(".png")
            if not png.is_file():
                continue
            meta = json.loads(path.read_text())
            shutil.copyfile(png, out_dir / png.name)
            sources = "; ".join(f"{k}: {v['model']}, `{Path(v['store']).name}`" for k, v in meta["sources"].items())
            lines += [f"![{png.stem}]({png.name})", "", f"*Linear CKA over {meta['images']} images. {sources}.*", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
