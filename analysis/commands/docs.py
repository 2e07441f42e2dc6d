"""The docs command: the README's and the model cards' results tables and the evidence index,
written from the committed evidence files between their markers."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from extract.store.cli_options import user_errors


@click.command("docs")
@click.option("--check", is_flag=True, help="write nothing; exit 1 naming each block that differs")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="the repository root",
)
@user_errors
def docs(check, root):
    """Write the results tables (README, model cards) and evidence/README.md's index from evidence/."""
    from analysis.docs import check_docs, write_docs

    if check:
        stale = check_docs(root)
        for label in stale:
            click.echo(f"differs from the evidence: {label} (run python -m analysis docs)", err=True)
        sys.exit(1 if stale else 0)
    changed = write_docs(root)
    click.echo("rewritten: " + ", ".join(changed) if changed else "every block matches the evidence")
