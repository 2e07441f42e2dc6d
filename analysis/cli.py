"""`python -m analysis`: one click group over the commands of `analysis.commands`, which are thin
click shells over the library."""

from __future__ import annotations

import click

from analysis.commands.accuracy import best, curves, diff, leaderboard, report, table_cmd
from analysis.commands.docs import docs
from analysis.commands.generation import fd, fid_cmd, gen_table
from analysis.commands.similarity import align, bench, cka
from extract.store.config_files import add_config_option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """diffprobe analysis: plots from probe results."""


for _command in (
    curves,
    best,
    diff,
    table_cmd,
    leaderboard,
    report,
    cka,
    align,
    bench,
    fd,
    fid_cmd,
    gen_table,
    docs,
):
    cli.add_command(_command)
add_config_option(cli)  # every command takes --config FILE


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="python -m analysis")
