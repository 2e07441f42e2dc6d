"""`python -m analysis`: thin click commands over the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from extract.cli import user_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """diffprobe analysis: plots from probe results."""


@cli.command()
@click.option("--results", "runs", multiple=True, required=True, help="LABEL=results.json of a probe run (repeat; a repeated LABEL pools its runs)")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="figure path (.png; an .svg is written beside it)")
@click.option("--title", default="linear probe accuracy")
@user_errors
def curves(runs, out, title):
    """Accuracy vs t, b and pool: the validation-best member per value, its test accuracy."""
    from analysis.curves import plot_curves

    members, sources = {}, {}
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected LABEL=PATH")
        result = json.loads(Path(path).read_text())
        members.setdefault(label, []).extend(result["members"])  # a repeated label pools runs
        sources.setdefault(label, []).append(Path(result["stores"]["train"]["path"]).name)
    fig = plot_curves(members, title, "\n".join(f"{label}: {', '.join(names)}" for label, names in sources.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    click.echo(f"written: {out} and {out.with_suffix('.svg')}")


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="python -m analysis")
