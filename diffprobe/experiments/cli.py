"""`diffprobe experiment NAME [--row R] [--set k=v] [--from-env] [--dry-run]`."""

from __future__ import annotations

import os
import sys

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", required=False)
@click.option("--row", help="the row of an experiment with rows (make paper ROW=...)")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME=VALUE",
    help="a setting (repeat); the make variable of the same name in upper case",
)
@click.option(
    "--from-env",
    is_flag=True,
    help="also take each setting from an environment variable of its name in upper case (what make passes)",
)
@click.option("--dry-run/--run", default=False, help="print the commands and plans without running them")
def experiment(name, row, sets, from_env, dry_run):
    """Run (or print) an experiment (diffprobe/experiments/). No NAME: list them."""
    from diffprobe.experiments.registry import describe, get_experiment, run_experiment
    from diffprobe.experiments.settings import from_environment, parse_sets

    try:
        if not name:
            click.echo(describe())
            return
        spec = get_experiment(name)
        given = {
            **(from_environment(dict(os.environ), spec.cls) if from_env else {}),
            **parse_sets(list(sets)),
        }
        run_experiment(spec, spec.settings(given, row), dry=dry_run)
    except (ValueError, FileNotFoundError, PermissionError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


cli = experiment
