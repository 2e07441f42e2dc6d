"""`diffprobe matrix`: the matrix experiment with its settings as options (each default is the
experiment's own, from experiments.toml; `make matrix` passes the same settings as variables)."""

from __future__ import annotations

import sys

import click

# option -> the setting it gives
OPTIONS = {
    "models": "comma list of model names (a preset, pixels, bigan, classifier) or a TOML file of entries",
    "datasets": "comma list of registry datasets or a TOML file of entries",
    "seeds": "seeds: each cell runs once per seed (noise seed k with head seed k)",
    "limit": "a seeded subset of this many images of each split (empty: all)",
    "t": "a run entry's t when it gives none",
    "b": "... its blocks",
    "pool": "... its pools",
    "executor": "local (in sequence, or --jobs at a time) or slurm (one job array through submitit)",
    "jobs": "cells at once (local: worker processes sharing the cores)",
    "knn": "k of the kNN classifiers at the chosen point (empty: none)",
    "attention": "1: also an attention head at the chosen point",
    "reference": "the leaderboard's reference model (empty: the first)",
    "store_out": "where stores go (a store already made with the same key is reused)",
    "matrix_out": "where cells' lines, logs and probe results go",
    "board_out": "where the leaderboard goes (empty: MATRIX_OUT/leaderboard)",
    "partition": "slurm: the partition (empty: the cluster's default)",
    "gpus_per_task": "slurm: GPUs per task",
    "cpus_per_task": "slurm: CPUs per task (the cell's torch threads)",
    "procs_per_cell": "above 1: each cell's extraction runs under torchrun with this many processes "
    "(one per GPU of its task; the stores are the same bit for bit), its heads in the cell's own",
    "slurm_time": "slurm: minutes per task (--time)",
    "array_parallelism": "slurm: tasks of the array at once",
    "slurm_extra": "slurm: more sbatch options as KEY=VALUE, comma-separated (account=abc,qos=high)",
}
# the flags the SLURM options go by, where they differ from the setting's name
FLAGS = {"slurm_time": "time"}


def _options(fn):
    for name, text in reversed(OPTIONS.items()):
        flag = FLAGS.get(name, name).replace("_", "-")
        fn = click.option(f"--{flag}", name, default=None, help=text)(fn)
    return fn


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_options
@click.option(
    "--wait/--no-wait", default=None, help="slurm: follow the array to its end, or submit and return"
)
@click.option("--dry-run/--run", default=False, help="list the cells and the stores each would extract")
def cli(dry_run, **given):
    """Models x datasets (x seeds): each cell's stores, its linear grid chosen on validation, kNN
    at the chosen point; one JSON line per cell and a leaderboard. A rerun runs only the cells
    that are missing or failed."""
    from diffprobe.experiments.registry import get_experiment, run_experiment

    spec = get_experiment("matrix")
    try:
        given = {k: ("1" if v is True else "0" if v is False else v) for k, v in given.items()}
        settings = spec.settings({k: v for k, v in given.items() if v is not None})
        run_experiment(spec, settings, dry=dry_run)
    except (ValueError, FileNotFoundError, PermissionError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
