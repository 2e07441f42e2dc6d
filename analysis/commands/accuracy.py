"""The accuracy commands over probe results: curves, the best member per value, a paired
difference between two sets of runs, a table of rows over seeds, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from extract.store.cli_options import invocation, user_errors


@click.command()
@click.option(
    "--results",
    "runs",
    multiple=True,
    help="LABEL=results.json of a probe run (repeat; a repeated LABEL pools its runs)",
)
@click.option(
    "--table",
    type=click.Path(path_type=Path),
    help="a probe_results.csv: one point per run, a line per model and weights",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="figure path (.png; an .svg is written beside it)",
)
@click.option("--title", default="linear probe accuracy")
@click.option(
    "--t-axis",
    type=click.Choice(["t", "log-snr"]),
    default="t",
    help="--results: the t panel's x, the scheduler's t or the log-SNR each run's model saw there",
)
@user_errors
def curves(runs, table, out, title, t_axis):
    """Accuracy vs t, b and pool: the validation-best member (or run) per value, its test accuracy."""
    from analysis.curves import members_from_table, plot_curves
    from probe.tables import read_results, read_table

    if bool(runs) == bool(table):
        raise ValueError("give either --results LABEL=FILE (repeatable) or --table FILE")
    members, sources, levels = {}, {}, {}
    if table:
        if not table.is_file():
            raise FileNotFoundError(f"results table not found: {table}")
        members = members_from_table(read_table(table))
        sources = {"table": [str(table)]}
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected LABEL=PATH")
        result = read_results(path)
        members.setdefault(label, []).extend(result["members"])
        sources.setdefault(label, []).append(Path(result["stores"]["train"]["path"]).name)
        if t_axis == "log-snr":
            from extract.store.schema import FeatureStore

            levels.setdefault(label, {}).update(
                FeatureStore.open(result["stores"]["train"]["path"]).log_snrs()
            )
    if t_axis == "log-snr" and table:
        raise ValueError("--t-axis log-snr reads each run's store: give --results, not --table")
    fig = plot_curves(
        members,
        title,
        "\n".join(f"{label}: {', '.join(names)}" for label, names in sources.items()),
        levels if t_axis == "log-snr" else None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    click.echo(f"written: {out} and {out.with_suffix('.svg')}")


@click.command()
@click.option(
    "--results",
    "runs",
    multiple=True,
    required=True,
    help="LABEL=results.json of a probe run (repeat, or a glob; a repeated LABEL pools its runs)",
)
@click.option(
    "--by",
    "axis",
    type=click.Choice(["t", "b", "pool"]),
    default="pool",
    help="one row per value of this axis",
)
@click.option(
    "--csv",
    "csv_out",
    type=click.Path(path_type=Path),
    help="also write every member (validation and test top-1) as CSV",
)
@user_errors
def best(runs, axis, csv_out):
    """The validation-best member for each value of t, b or pool (test only reported)."""
    import csv

    from analysis.curves import best_table, member_row

    members = _members(runs)
    rows = best_table(members, axis)
    click.echo(f"{'run':<16} {axis:>5}  {'features':<24} {'lr':>7} {'val top-1':>9} {'test top-1':>10}")
    for r in rows:
        member = f"{r['run']:<16} {str(r['value']):>5}  {r['features']:<24} {r['lr']!s:>7}"
        click.echo(f"{member} {r['val_top1']:>9.2f} {r['test_top1']:>10.2f}")
    if csv_out:
        every = [member_row(label, m) for label, ms in members.items() for m in ms]
        csv_out.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(every[0]))
            writer.writeheader()
            writer.writerows(every)
        click.echo(f"written: {csv_out} ({len(every)} members)")


def _members(runs) -> dict[str, list[dict]]:
    from analysis.intervals import expand
    from probe.tables import read_results

    members: dict[str, list[dict]] = {}
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected LABEL=PATH")
        for one in expand([path]):  # a glob pools every run it matches
            members.setdefault(label, []).extend(read_results(one)["members"])
    return members


@click.command()
@click.option(
    "--a",
    "a_files",
    multiple=True,
    required=True,
    help="results JSON of side A (comma list, repeat or glob; several runs are seeds)",
)
@click.option("--b", "b_files", multiple=True, required=True, help="results JSON of side B, the same way")
@click.option(
    "--resamples",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="bootstrap resamples of the test rows",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seeds the resampling")
@click.option("--out", type=click.Path(path_type=Path), help="also write the result as JSON")
@user_errors
def diff(a_files, b_files, resamples, seed, out):
    """A's test top-1 minus B's, in points, with a 95% paired-bootstrap interval over the shared
    test rows (each run's NAME.predictions.npz)."""
    from analysis.intervals import compare

    result = compare(a_files, b_files, resamples, seed)
    click.echo(result.line())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**result.to_dict(), "invocation": invocation()}, indent=1) + "\n")


@click.command("table")
@click.option(
    "--row",
    "rows",
    multiple=True,
    help="LABEL=PATTERN: a row, its results files per head with {head} in the pattern (several files: seeds)",
)
@click.option(
    "--rows-from",
    help="PATTERN with {row} and {head}: a row for every text {row} stands for in an existing file "
    "(after the --row rows)",
)
@click.option(
    "--fd-from", help="PATTERN with {row}: each row's Fréchet distance result, where the file exists"
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    help="also draw each head's top-1 (and FD) over the rows, in their order (.png, .svg beside it)",
)
@click.option("--title", default="", help="the plot's title")
@click.option(
    "--head",
    "heads",
    multiple=True,
    default=("linear",),
    show_default=True,
    help="heads: the table's columns (repeat or comma list)",
)
@click.option(
    "--ref",
    "reference",
    help="the row every other row is compared with, per head, with a paired-bootstrap interval",
)
@click.option(
    "--fd",
    "generation",
    multiple=True,
    help="LABEL=FILE: a row's Fréchet distance result (analysis fid or fd JSON)",
)
@click.option("--resamples", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="seeds the resampling")
@click.option(
    "--out", type=click.Path(path_type=Path), help="also write the table as Markdown (and JSON beside it)"
)
@user_errors
def table_cmd(rows, rows_from, fd_from, plot, title, heads, reference, generation, resamples, seed, out):
    """Rows x heads of test top-1 over seeds (mean, spread, runs), FD where given, and each row
    minus the reference row with 95% intervals."""
    from analysis.seed_table import build_table, generation_from, markdown, parse_rows
    from analysis.seed_table import plot as plot_table
    from analysis.seed_table import rows_from as find_rows

    heads = [h for item in heads for h in item.split(",") if h]
    pairs = (parse_rows(rows) if rows else []) + (find_rows(rows_from, heads) if rows_from else [])
    if not pairs:
        raise ValueError(
            "give --row LABEL=PATTERN or --rows-from PATTERN"
            + (" (it found no results file)" if rows_from else "")
        )
    if fd_from:
        generation = (*generation, *generation_from(fd_from, [label for label, _ in pairs]))
    table = build_table(pairs, heads, reference, generation, resamples, seed)
    text = markdown(table)
    click.echo(text, nl=False)
    if plot:
        plot_table(table, plot, title)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(
            json.dumps({**table.to_dict(), "invocation": invocation()}, indent=1) + "\n"
        )


@click.command()
@click.option(
    "--results",
    "results",
    multiple=True,
    type=click.Path(path_type=Path),
    default=(Path("results"),),
    show_default=True,
    help="folders searched (recursively) for probe results tables",
)
@click.option(
    "--cka",
    "cka_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    default=(Path("results/cka"),),
    show_default=True,
    help="folders of CKA maps (PNG + JSON)",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--title", default="diffprobe report", show_default=True)
@click.option(
    "--generation",
    type=click.Path(path_type=Path),
    default=Path("results/gen/generation.json"),
    show_default=True,
    help="a generation table (`gen-table --out`), included when it exists",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="bootstrap resamples for the Differences section",
)
@user_errors
def report(results, cka_dirs, out, title, generation, resamples):
    """One report from whatever results exist: Markdown, and one self-contained HTML page
    (accuracy with intervals and provenance, differences between runs with paired-bootstrap
    intervals, curves, CKA, generation)."""
    from analysis.report import build_report

    md, page, missing = build_report(
        list(results), list(cka_dirs), out, title, generation=generation, resamples=resamples
    )
    for line in missing:
        click.echo(f"not in the report: {line}")
    click.echo(f"written: {md}, {page}")


@click.command()
@click.option(
    "--results",
    "results",
    required=True,
    type=click.Path(path_type=Path),
    help="a matrix's results.jsonl (one line per cell)",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="folder for the leaderboard's files"
)
@click.option("--reference", default=None, help="the model the others are compared with (default: the first)")
@click.option("--title", default="matrix leaderboard")
@click.option(
    "--x",
    "axis",
    type=click.Choice(["t", "log-snr"]),
    default="t",
    help="the figure's x: the scheduler's t, or the log-SNR each model saw there (equal noise lines up)",
)
@user_errors
def leaderboard(results, out, reference, title, axis):
    """A matrix's leaderboard: CSV, Markdown and a sortable HTML table (models x datasets), and
    validation top-1 against t."""
    from analysis.leaderboard import read_lines, write_leaderboard

    written = write_leaderboard(read_lines(results), out, title=title, reference=reference, axis=axis)
    click.echo("written: " + ", ".join(map(str, written)))
