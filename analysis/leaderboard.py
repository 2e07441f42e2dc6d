"""A matrix's leaderboard from its cells' lines (`results.jsonl`): models x datasets.

Each entry is the test top-1 of the linear grid's validation choice: the mean and the sample
standard deviation over seeds when there are several ("mean +- sd, n seeds"), else the one run.
Each dataset's best mean is marked, and each model gets its mean rank over the datasets (rank 1
the best; ties share the mean of their ranks). Against a reference model, each model's
difference on each dataset comes with a 95% paired-bootstrap interval over the test images
(analysis.intervals: the same resampled rows for every seed of both sides).

Written as CSV, Markdown and one HTML page (a sortable table; each entry's provenance in its
hover text and a link to its results file), and a figure: validation top-1 against t, one line
per model, one panel per dataset. numpy (and matplotlib for the figure) only.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.intervals import paired_bootstrap

CELL_FORMAT = "diffprobe-matrix-cell"  # the lines diffprobe.matrix writes
SORT_SCRIPT = """<script>
document.querySelectorAll("th[data-col]").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = +th.dataset.col;
    var down = th.dataset.dir !== "down"; th.dataset.dir = down ? "down" : "up";
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = parseFloat(a.cells[col].dataset.v), y = parseFloat(b.cells[col].dataset.v);
      if (isNaN(x)) return 1; if (isNaN(y)) return -1;
      return down ? y - x : x - y;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>"""


@dataclass
class Entry:
    """One (model, dataset): each seed's test top-1, and the lines behind them."""

    runs: list[float] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.runs))

    @property
    def sd(self) -> float:
        return float(np.std(self.runs, ddof=1)) if len(self.runs) > 1 else 0.0

    def text(self) -> str:
        if len(self.runs) == 1:
            return f"{self.runs[0]:.2f}"
        return f"{self.mean:.2f} +- {self.sd:.2f} (n={len(self.runs)})"


@dataclass
class Leaderboard:
    models: list[str]
    datasets: list[str]
    entries: dict[tuple[str, str], Entry]
    ranks: dict[str, float]
    best: dict[str, str]  # dataset -> model with the best mean
    reference: str
    diffs: dict[tuple[str, str], dict]  # (model, dataset) -> the paired difference to the reference
    failed: list[str]


def read_lines(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"matrix results not found: {path} (run `diffprobe matrix` first)")
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except ValueError as e:
                raise ValueError(f"{path}, line {number}: not a JSON line ({e})") from None
    return lines


def mean_ranks(models: list[str], datasets: list[str], entries: dict) -> dict[str, float]:
    """Each model's mean over datasets of its rank there (1 = best; ties take their mean rank);
    a dataset where a model has no entry is left out of that model's mean."""
    ranks: dict[str, list[float]] = {m: [] for m in models}
    for d in datasets:
        scored = [(entries[(m, d)].mean, m) for m in models if (m, d) in entries]
        values = np.array([v for v, _ in scored])
        for v, m in scored:
            better, equal = int((values > v).sum()), int((values == v).sum())
            ranks[m].append(better + (equal + 1) / 2)
    return {m: float(np.mean(r)) if r else float("nan") for m, r in ranks.items()}


def _correct(line: dict, root: Path) -> tuple[np.ndarray, np.ndarray] | None:
    path = (line.get("provenance") or {}).get("predictions")
    if not path:
        return None
    path = Path(path) if Path(path).is_absolute() or Path(path).exists() else root / path
    with np.load(path) as f:
        index, label, pred = f["index"], f["label"], f["pred"]
    order = np.argsort(index, kind="stable")
    return index[order], pred[order] == label[order]


def _paired(a: Entry, b: Entry, root: Path, seed: int) -> dict | None:
    sides = []
    for entry in (a, b):
        rows = [_correct(line, root) for line in entry.lines]
        if any(r is None for r in rows):
            return None
        sides.append(rows)
    index = sides[0][0][0]
    if any(len(i) != len(index) or not np.array_equal(i, index) for side in sides for i, _ in side):
        return None  # scored on other test rows: no pairing
    d = paired_bootstrap([c for _, c in sides[0]], [c for _, c in sides[1]], resamples=2000, seed=seed)
    return {"points": d.points, "low": d.low, "high": d.high, "rows": d.rows}


def build(
    lines: list[dict], reference: str | None = None, root: Path = Path("."), seed: int = 0
) -> Leaderboard:
    done = [line for line in lines if line.get("status") == "done"]
    failed = [line["cell"] for line in lines if line.get("status") != "done"]
    models = list(dict.fromkeys(line["model"] for line in lines))
    datasets = list(dict.fromkeys(line["dataset"] for line in lines))
    entries: dict[tuple[str, str], Entry] = {}
    for line in sorted(done, key=lambda x: x["seed"]):
        entry = entries.setdefault((line["model"], line["dataset"]), Entry())
        entry.runs.append(float(line["linear"]["test_top1"]))
        entry.lines.append(line)
    if reference is not None and reference not in models:
        raise ValueError(f"reference model {reference!r} is not in the matrix (models: {', '.join(models)})")
    reference = reference or (models[0] if models else "")
    best = {}
    for d in datasets:
        scored = [(entries[(m, d)].mean, -i, m) for i, m in enumerate(models) if (m, d) in entries]
        if scored:
            best[d] = max(scored)[2]
    diffs = {}
    for (m, d), entry in entries.items():
        if m != reference and (reference, d) in entries:
            paired = _paired(entry, entries[(reference, d)], root, seed)
            if paired is not None:
                diffs[(m, d)] = paired
    return Leaderboard(
        models, datasets, entries, mean_ranks(models, datasets, entries), best, reference, diffs, failed
    )


def _diff_text(diff: dict | None) -> str:
    if diff is None:
        return ""
    return f"{diff['points']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"


def to_csv(board: Leaderboard) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "model",
            "dataset",
            "seeds",
            "test_top1_mean",
            "test_top1_sd",
            "runs",
            "point",
            f"minus_{board.reference}",
            "low",
            "high",
            "mean_rank",
        ]
    )
    for m in board.models:
        for d in board.datasets:
            entry = board.entries.get((m, d))
            if entry is None:
                writer.writerow([m, d, 0, "", "", "", "", "", "", "", f"{board.ranks[m]:.2f}"])
                continue
            diff = board.diffs.get((m, d)) or {}
            point = entry.lines[0]["point"]["feature_set"]
            writer.writerow(
                [
                    m,
                    d,
                    len(entry.runs),
                    f"{entry.mean:.4f}",
                    f"{entry.sd:.4f}",
                    " ".join(f"{r:.2f}" for r in entry.runs),
                    point,
                    *(f"{diff[k]:.4f}" if diff else "" for k in ("points", "low", "high")),
                    f"{board.ranks[m]:.2f}",
                ]
            )
    return out.getvalue()


def _label_note(board: Leaderboard) -> str:
    seeds = {len(e.runs) for e in board.entries.values()}
    spread = "mean +- sample sd over n seeds" if max(seeds, default=1) > 1 else "one run each"
    return (
        f"Test top-1 (%) of the linear grid's validation choice ({spread}); **bold**: the dataset's best; "
        f"mean rank over datasets (1 = best); differences to {board.reference} in points with a 95% "
        "paired-bootstrap interval over the test images."
    )


def to_markdown(board: Leaderboard) -> str:
    head = ["model", *board.datasets, "mean rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in board.models:
        cells = [m]
        for d in board.datasets:
            entry = board.entries.get((m, d))
            text = "failed" if entry is None else entry.text()
            text = f"**{text}**" if board.best.get(d) == m else text
            diff = _diff_text(board.diffs.get((m, d)))
            cells.append(text + (f" ({diff})" if diff else ""))
        cells.append(f"{board.ranks[m]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    note = _label_note(board)
    if board.failed:
        note += f" Failed cells: {', '.join(board.failed)}."
    return "\n".join(lines) + "\n\n" + note + "\n"


def _provenance(entry: Entry) -> str:
    parts = []
    for line in entry.lines:
        point = line["point"]
        stores = line.get("provenance", {}).get("stores", {})
        weights = (stores.get("train") or {}).get("weights") or {}
        parts.append(
            f"seed {line['seed']}: {point['feature_set']} lr {point.get('lr')} wd {point.get('wd')}; "
            f"val {point['val_top1']:.2f}; weights {weights.get('sha256', 'none')}; "
            f"train store {(stores.get('train') or {}).get('path')}"
        )
    return "\n".join(parts)


def to_html(board: Leaderboard, title: str, figure: str | None = None, base: Path | None = None) -> str:
    """The sortable page; links to results files are relative to `base` (the page's folder)."""
    esc = html.escape
    cols = ["model", *board.datasets, "mean rank"]
    head = "".join(f'<th data-col="{i}">{esc(c)}</th>' for i, c in enumerate(cols))
    body = []
    for m in board.models:
        cells = [f'<td data-v="nan">{esc(m)}</td>']
        for d in board.datasets:
            entry = board.entries.get((m, d))
            if entry is None:
                cells.append('<td data-v="nan">failed</td>')
                continue
            text = esc(entry.text())
            text = f"<b>{text}</b>" if board.best.get(d) == m else text
            diff = _diff_text(board.diffs.get((m, d)))
            link = (entry.lines[0].get("provenance") or {}).get("results")
            link = os.path.relpath(link, base) if link and base is not None else link
            text = f'<a href="{esc(str(link))}">{text}</a>' if link else text
            small = f"<br><small>{esc(diff)}</small>" if diff else ""
            cells.append(
                f'<td data-v="{entry.mean:.4f}" title="{esc(_provenance(entry))}">{text}{small}</td>'
            )
        cells.append(f'<td data-v="{-board.ranks[m]:.4f}">{board.ranks[m]:.2f}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    fig = f'<p><img src="{esc(figure)}" style="max-width:100%"></p>' if figure else ""
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{cursor:pointer;background:#eee}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body><h1>{esc(title)}</h1>"
        f"<p>{esc(_label_note(board)).replace('**bold**', '<b>bold</b>')} Click a column to sort; "
        "hover an entry for its provenance.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{fig}"
        f"{SORT_SCRIPT}</body></html>\n"
    )


AXES = ("t", "log-snr")


def _log_snrs(line: dict, root: Path) -> dict[int, float]:
    """t -> the log-SNR the model saw there, as the cell's training store's key records it."""
    from extract.store.schema import FeatureStore

    path = Path(line["provenance"]["stores"]["train"]["path"])
    path = path if path.exists() else root / path
    return FeatureStore.open(path).log_snrs()


def by_t(board: Leaderboard, root: Path, axis: str = "t") -> dict[str, dict[str, dict[float, float]]]:
    """dataset -> model -> t (or, with axis 'log-snr', the log-SNR the model saw at t) -> the best
    validation top-1 there (mean over seeds), from each cell's results file; models without t
    (pixels, encoders) are left out."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")
    curves: dict[str, dict[str, dict[float, float]]] = {}
    for (m, d), entry in board.entries.items():
        per_t: dict[int, list[float]] = {}
        at: dict[int, float] = {}
        for line in entry.lines:
            path = Path(line["provenance"]["results"])
            path = path if path.exists() else root / path
            best: dict[int, float] = {}
            for member in json.loads(path.read_text())["members"]:
                ts = {f["t"] for f in member["features"]}
                if len(ts) == 1 and member["head"] == "linear":
                    t = ts.pop()
                    best[t] = max(best.get(t, 0.0), member["val"]["top1"])
            for t, v in best.items():
                per_t.setdefault(t, []).append(v)
            if axis == "log-snr" and (len(best) > 1 or (best and 0 not in best)):
                at.update(_log_snrs(line, root))
        if len(per_t) > 1 or (per_t and 0 not in per_t):
            x = (lambda t: at[t]) if axis == "log-snr" else (lambda t: t)
            curves.setdefault(d, {})[m] = {x(t): float(np.mean(v)) for t, v in sorted(per_t.items())}
    return curves


def plot_by_t(curves: dict, out: Path, axis: str = "t") -> bool:
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    label = "log-SNR the model saw (less noise to the right)" if axis == "log-snr" else "t"
    for ax, (d, models) in zip(axes[0], curves.items()):
        for m, points in models.items():
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", label=m)
        ax.set(title=d, xlabel=label, ylabel="validation top-1 (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def write_leaderboard(
    lines: list[dict],
    out: Path,
    title: str = "matrix leaderboard",
    reference: str | None = None,
    root: Path = Path("."),
    axis: str = "t",
) -> list[Path]:
    """leaderboard.{csv,md,html} (and by_t.png where models have several t) in `out`; `axis`:
    the figure's x, t or the log-SNR each model saw there (from its stores' keys)."""
    board = build(lines, reference, root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "by_t.png"
    drawn = plot_by_t(by_t(board, root, axis), figure, axis)
    written = {
        out / "leaderboard.csv": to_csv(board),
        out / "leaderboard.md": to_markdown(board),
        out / "leaderboard.html": to_html(board, title, figure.name if drawn else None, out),
    }
    for path, text in written.items():
        path.write_text(text)
    return [*written, *([figure] if drawn else [])]


# ---------------------------------------------------------------- the report's section
def find_matrices(folders: list[Path]) -> list[tuple[Path, Leaderboard]]:
    """Every matrix under the results folders (a results.jsonl of cell lines) and its board."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("results.jsonl")) if Path(folder).is_dir() else []:
            lines = read_lines(path)
            if lines and all(line.get("format") == CELL_FORMAT for line in lines):
                found.append((path, build(lines)))
    return found


def matrices_markdown(matrices: list[tuple[Path, Leaderboard]]) -> list[str]:
    lines = ["## Matrix", ""] if matrices else []
    for path, board in matrices:
        lines += [f"### `{path}`", "", to_markdown(board)]
    return lines


def matrices_html(matrices: list[tuple[Path, Leaderboard]]) -> list[str]:
    parts = ["<h2>Matrix</h2>"] if matrices else []
    for path, board in matrices:
        page = to_html(board, str(path))
        body = page[page.index("<h1>") : page.index("</body>")]
        parts.append(body.replace("<h1>", "<h3><code>").replace("</h1>", "</code></h3>"))
    return parts
