"""One report from whatever results exist: a Markdown file and one self-contained HTML page.

It gathers every probe results table under the results folders (what `make probe`, `make demo`,
`make paper` and the sweeps write), the ablation curves of grids that vary t, b or pool, the CKA
maps (captioned with their own kernel), the generation table, and says what is missing and
which command makes it. Every accuracy row carries its provenance (model, weights and their
hash, t, b, pool, seed, dataset, the command) and a 95% interval for its test top-1 (Wilson's,
over the test rows: the uncertainty of the test set alone). Differences between the runs of one
results folder come with a 95% paired-bootstrap interval (analysis.intervals). The HTML page
embeds every figure, so it opens anywhere with no network.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from analysis.curves import AXES
from analysis.leaderboard import find_matrices, matrices_html, matrices_markdown
from analysis.report_figures import Figure, block_cell, cka_figures, curves_figure, figure, layers_of
from probe.edges import find_edges
from probe.tables import read_table

TABLE = "probe_results.csv"


def wilson(top1: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy (percent) measured on n rows, in percent."""
    if n <= 0:
        return float("nan"), float("nan")
    p = top1 / 100.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100.0 * (centre - half), 100.0 * (centre + half)


@dataclass
class Row:
    table: Path
    cells: dict
    seed: str = "?"
    command: str = "?"
    layers: dict = field(default_factory=dict)  # block -> layer name, as a staged network's store names it
    edge: str = ""  # settings chosen on their grid's edge ("lr high"), from the row or its results file

    @property
    def interval(self) -> str:
        try:
            lo, hi = wilson(float(self.cells["test_top1"]), int(self.cells["test_rows"]))
        except (KeyError, ValueError):
            return ""
        return f"{lo:.2f}-{hi:.2f}"


@dataclass
class Found:
    rows: list[Row] = field(default_factory=list)
    curves: list[Figure] = field(default_factory=list)
    cka: list[Figure] = field(default_factory=list)
    generation: list[dict] | None = None
    generation_caption: str = ""
    missing: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    # analysis.intervals.FolderDiffs, one per results folder of two or more runs
    differences: list = field(default_factory=list)
    resamples: int = 10000
    matrices: list = field(default_factory=list)  # (results.jsonl, analysis.leaderboard.Leaderboard)


def _results_json(table: Path, row: dict) -> dict:
    path = table.parent / row.get("results", "")
    try:
        return json.loads(path.read_text()) if row.get("results") and path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _command(result: dict, path: Path) -> str:
    """The command that reruns a probe run: its recorded invocation, given its results file as --config."""
    if result.get("invocation"):
        return f"{result['invocation']['command']} --config {path}"
    return "python -m probe train (no recorded invocation)" if result else "?"


def _latest_rows(table: Path) -> list[dict]:
    """A table's rows, one per run: where a rerun appended a second row of the same results file
    (tables written before reruns replaced their row), the last, which that file now holds."""
    rows = {r.get("results") or r.get("name"): r for r in read_table(table)}
    return list(rows.values())


def _gather_rows(found: Found, results_dirs: list[Path]) -> list[tuple[str, dict]]:
    runs = []
    for folder in results_dirs:
        for table in sorted(folder.rglob(TABLE)) if folder.is_dir() else []:
            found.sources.append(str(table))
            for cells in _latest_rows(table):
                result = _results_json(table, cells)
                seed = (
                    result.get("config", {})
                    .get("training", {})
                    .get("seed", result.get("config", {}).get("seed", "?"))
                )
                command = _command(result, table.parent / cells.get("results", ""))
                layers = layers_of(((result.get("stores") or {}).get("train") or {}).get("provenance"))
                found.rows.append(
                    Row(table, cells, str(seed), command, layers, cells.get("edge") or _edges(result))
                )
                if result.get("format") == "diffprobe-probe-results" and _varies(result):
                    runs.append((cells.get("name", table.parent.name), result))
    if not found.rows:
        found.missing.append(
            f"probe results: no {TABLE} under {', '.join(map(str, results_dirs))} "
            "(`make probe HEAD=linear` or `make demo` writes one)"
        )
    return runs


def _edges(result: dict) -> str:
    """The settings a run chose on its grid's edge, judged from its results file (runs recorded
    before their table had the column)."""
    members, selected = result.get("members") or [], result.get("selected")
    if not isinstance(selected, int) or not 0 <= selected < len(members) or "val" not in members[selected]:
        return ""
    return ", ".join(str(e) for e in find_edges(members, selected))


def _varies(result: dict) -> bool:
    return any(len({f[axis] for m in result["members"] for f in m["features"]}) > 1 for axis in AXES)


def _gather_cka(found: Found, cka_dirs: list[Path]) -> None:
    found.cka = cka_figures(cka_dirs)
    if not found.cka:
        found.missing.append(f"CKA maps: none in {', '.join(map(str, cka_dirs))} (`make cka` draws them)")


def _gather_differences(found: Found, seed: int = 0) -> None:
    from analysis.intervals import folder_differences

    for table in dict.fromkeys(r.table for r in found.rows):
        files = [r.cells["results"] for r in found.rows if r.table == table and r.cells.get("results")]
        if len(set(files)) > 1:
            found.differences.append(folder_differences(table.parent, files, found.resamples, seed))


DIFF_COLUMNS = [
    "A",
    "B",
    "A - B (points)",
    "95% interval",
    "test rows",
    "A: runs, mean +- sd",
    "B: runs, mean +- sd",
]
DIFF_NOTE = (
    "Within each results folder, the first configuration in its table (with per-row test predictions) "
    "against each other one: the difference of test top-1 in points and its 95% paired-bootstrap interval "
    "({resamples} resamples of the test rows, the same rows for every run of both sides). Runs whose names "
    "differ only by a `-s<k>` or `-seed<k>` suffix are seeds of one configuration: their mean is compared "
    "and their spread (sample sd) shown. Runs without a predictions file, or scored on other test rows or "
    "another dataset, are skipped and named."
)


def _diff_cells(d) -> list[str]:
    return [
        d.a,
        d.b,
        f"{d.points:+.2f}",
        d.interval(),
        str(d.rows),
        *(s.split(": ", 1)[1] for s in (d.side("A"), d.side("B"))),
    ]


def gather(
    results_dirs: list[Path], cka_dirs: list[Path], generation: Path | None, resamples: int = 10000
) -> Found:
    found = Found(resamples=resamples)
    for name, result in _gather_rows(found, results_dirs):
        train = result["stores"]["train"]
        store = Path(train["path"]).name if train.get("path") else "?"
        fig, fixed = curves_figure(name, result["members"], layers_of(train.get("provenance")))
        held = f" (held at {fixed})" if fixed else ""
        varies = f"at each value of what the grid varies{held}"
        caption = f"{name}: the validation-best member {varies}; store `{store}`."
        found.curves.append(figure(f"curves_{name}", fig, caption))
    _gather_differences(found)
    found.matrices = find_matrices(results_dirs)
    _gather_cka(found, cka_dirs)
    if generation is not None and Path(generation).is_file():
        from analysis.gentable import read_table as read_generation

        found.generation = read_generation(generation)
        gen = found.generation
        space = f"{gen[0]['features']}" + (
            f", a classifier of {gen[0]['feature_net_test_top1']}% test accuracy"
            if gen and gen[0].get("feature_net_test_top1")
            else ""
        )
        found.generation_caption = (
            f"Fréchet distance, precision and recall (k=3) in the feature space of {space}; "
            f"from `{generation}`."
        )
    else:
        found.missing.append(
            f"generation: no table at {generation or 'results/gen/generation.json'} "
            "(`make demo-gen` samples and scores the demo)"
        )
    return found


ROW_COLUMNS = [
    "name",
    "head",
    "model",
    "weights",
    "dataset",
    "t",
    "b",
    "pool",
    "train_rows",
    "test_rows",
    "val_top1",
    "test_top1",
    "edge",
]


def _cells(r: Row) -> list[str]:
    """A row's cells in ROW_COLUMNS order, its block named by layer where its store names it."""
    special = {"b": block_cell(r.layers, r.cells.get("b", "")), "edge": r.edge}
    return [special.get(c, r.cells.get(c, "")) for c in ROW_COLUMNS]


EDGE_NOTE = (
    "Each row is the grid member chosen on validation; test accuracy was never used to choose. "
    "The interval is Wilson's 95% score interval over the test rows. `edge` names a setting whose "
    "chosen value is the highest or lowest its grid tried (`probe train --extend-edges N` tries beyond)."
)


def _markdown(found: Found, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "From " + (", ".join(f"`{s}`" for s in found.sources) or "no results table") + ".",
        "",
    ]
    if found.rows:
        lines += [
            "## Accuracy",
            "",
            "| " + " | ".join([*ROW_COLUMNS, "test 95% interval", "seed"]) + " |",
            "|" + "---|" * (len(ROW_COLUMNS) + 2),
        ]
        for r in found.rows:
            lines.append("| " + " | ".join(map(str, _cells(r))) + f" | {r.interval} | {r.seed} |")
        lines += [
            "",
            EDGE_NOTE,
            "",
        ]
    if found.differences:
        lines += ["## Differences", "", DIFF_NOTE.format(resamples=found.resamples), ""]
        for folder in found.differences:
            lines += [f"### `{folder.folder}`", ""]
            if folder.diffs:
                lines += ["| " + " | ".join(DIFF_COLUMNS) + " |", "|" + "---|" * len(DIFF_COLUMNS)]
                lines += ["| " + " | ".join(_diff_cells(d)) + " |" for d in folder.diffs] + [""]
            lines += [*(f"- {s}" for s in folder.skipped), *([""] if folder.skipped else [])]
    lines += matrices_markdown(found.matrices)
    if found.generation is not None:
        from analysis.gentable import markdown

        lines += ["## Generation", "", *markdown(found.generation), "", f"*{found.generation_caption}*", ""]
    for heading, figures in (("Ablations", found.curves), ("CKA", found.cka)):
        if figures:
            lines += [f"## {heading}", ""]
        for f in figures:
            lines += [f"![{f.name}]({f.name}.png)", "", f"*{f.caption}*", ""]
    if found.missing:
        lines += ["## Not in this report", "", *[f"- {m}" for m in found.missing], ""]
    return "\n".join(lines) + "\n"


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}\n"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}\n"
    "th{background:#f0f0f0}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:13px;color:#555}\n"
    "details{font-size:12px;color:#444}code{font-size:12px}.missing{background:#fff6e0;padding:.5em 1em}"
)


def _code(text: str) -> str:
    """Escaped text with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(found: Found, title: str) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    parts.append(
        "<p>From "
        + (", ".join(f"<code>{e(s)}</code>" for s in found.sources) or "no results table")
        + ".</p>"
    )
    if found.rows:
        parts.append("<h2>Accuracy</h2>")
        parts.append(
            _html_table(
                [*ROW_COLUMNS, "test 95% interval", "seed"],
                [_cells(r) + [r.interval, r.seed] for r in found.rows],
            )
        )
        parts.append(f"<p>{_code(EDGE_NOTE)}</p><details><summary>Provenance of each row</summary>")
        parts.append(
            _html_table(
                [
                    "name",
                    "model",
                    "weights (file@sha256)",
                    "features",
                    "seed",
                    "dataset",
                    "version",
                    "command",
                    "results file",
                ],
                [
                    [
                        r.cells.get("name", ""),
                        r.cells.get("model", ""),
                        r.cells.get("weights", ""),
                        r.cells.get("features", ""),
                        r.seed,
                        r.cells.get("dataset", ""),
                        r.cells.get("version", ""),
                        r.command,
                        str(r.table.parent / r.cells.get("results", "")),
                    ]
                    for r in found.rows
                ],
            )
        )
        parts.append("</details>")
    if found.differences:
        parts.append(f"<h2>Differences</h2><p>{_code(DIFF_NOTE.format(resamples=found.resamples))}</p>")
        for folder in found.differences:
            parts.append(f"<h3><code>{e(str(folder.folder))}</code></h3>")
            if folder.diffs:
                parts.append(_html_table(DIFF_COLUMNS, [_diff_cells(d) for d in folder.diffs]))
            if folder.skipped:
                parts.append("<ul>" + "".join(f"<li>{_code(s)}</li>" for s in folder.skipped) + "</ul>")
    parts += matrices_html(found.matrices)
    if found.generation is not None:
        from analysis.gentable import COLUMNS

        parts.append("<h2>Generation</h2>")
        parts.append(
            _html_table(
                list(COLUMNS),
                [[("-" if r.get(c) is None else r.get(c)) for c in COLUMNS] for r in found.generation],
            )
        )
        parts.append(f"<p><em>{_code(found.generation_caption)}</em></p>")
    for heading, figures in (("Ablations", found.curves), ("CKA", found.cka)):
        if figures:
            parts.append(f"<h2>{heading}</h2>")
        for f in figures:
            data = base64.b64encode(f.png).decode("ascii")
            size = f" width='{f.width}'" if f.width else ""
            parts.append(
                f"<figure><img alt='{e(f.name)}'{size} src='data:image/png;base64,{data}'>"
                f"<figcaption>{_code(f.caption)}</figcaption></figure>"
            )
    if found.missing:
        parts.append(
            "<h2>Not in this report</h2><div class='missing'><ul>"
            + "".join(f"<li>{e(m)}</li>" for m in found.missing)
            + "</ul></div>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_report(
    results_dirs,
    cka_dirs,
    out_dir: str | Path,
    title: str = "diffprobe report",
    generation: str | Path | None = None,
    resamples: int = 10000,
) -> tuple[Path, Path, list[str]]:
    """Write out_dir/report.md (figures beside it) and out_dir/report.html (figures embedded).
    Returns (markdown, html, what is missing). Nothing found at all is an error."""
    results_dirs = [
        Path(p) for p in ([results_dirs] if isinstance(results_dirs, (str, Path)) else results_dirs)
    ]
    cka_dirs = [Path(p) for p in ([cka_dirs] if isinstance(cka_dirs, (str, Path)) else (cka_dirs or []))]
    found = gather(
        results_dirs, cka_dirs or [Path("results/cka")], Path(generation) if generation else None, resamples
    )
    if not found.rows and not found.cka and found.generation is None and not found.matrices:
        raise FileNotFoundError("nothing to report: " + "; ".join(found.missing))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in [*found.curves, *found.cka]:
        (out_dir / f"{f.name}.png").write_bytes(f.png)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(_markdown(found, title))
    page.write_text(_html(found, title))
    return md, page, found.missing
