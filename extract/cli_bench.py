"""`extract bench` and `extract bench-io`: early exit against the full forward, and the store's
read rate. The benchmarks' code is imported inside each command, never on the stage's path."""

from __future__ import annotations

import json
from pathlib import Path

import click

from extract.store.cli_options import STORE, user_errors
from extract.store.config import FORWARD_DTYPES


@click.command()
@click.option("--dtype", type=click.Choice(list(FORWARD_DTYPES)), default="fp32")
@click.option("--device", help="[default: cuda if available]")
@click.option("--out", type=click.Path(path_type=Path), help="also write the results as JSON")
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Choice(["adm256-uncond", "tiny", "tiny-sd", "tiny-dit"]),
    help="only these rows, repeated [default: all]",
)
@user_errors
def bench(dtype, device, out, models):
    """Time early exit against the full forward (adm256 b=24, tiny b=7, tiny-sd b=12, tiny-dit b=2),
    and for tiny-sd/tiny-dit latents read from the cache against VAE encoding."""
    import json

    from extract.bench.early_exit import DEFAULT_CASES, LATENT_CASES, bench_extract, format_table

    pick = lambda cases: tuple(c for c in cases if not models or c[0] in models)  # noqa: E731
    result = bench_extract(pick(DEFAULT_CASES), dtype=dtype, device=device, latent_cases=pick(LATENT_CASES))
    click.echo(format_table(result))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        click.echo(f"written to {out}")


@click.command("bench-io")
@click.option("--rows", type=click.IntRange(min=100), default=20000)
@click.option("--dim", type=click.IntRange(min=4), default=4096)
@click.option(
    "--store",
    type=STORE,
    help="also bench the rows of a real store (at a URL: read there, beside plain ranged GETs)",
)
@click.option("--key", help="the store's key to read (e.g. t10/b9/full) [default: its widest]")
@click.option("--out", type=click.Path(path_type=Path), help="also write the results as JSON")
@user_errors
def bench_io_cmd(rows, dim, store, key, out):
    """Store read rate by codec and reader against a raw numpy read of the same bytes, and size on disk."""
    from extract.bench.io import bench_io, format_table

    result = bench_io(rows=rows, dim=dim, store=store, key=key)
    click.echo(format_table(result))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
