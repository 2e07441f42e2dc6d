"""`python -m extract`: thin click commands over the library.

The commands that name a model (`run`, `blocks`, `presets`) are in extract.cli_run, the stores
written without a diffusion model (`pixels`, `backbone`, `features`) in extract.cli_stores, both
with options generated from their configs' fields; `bench` and `bench-io` in extract.cli_bench.
`bench-gpu` stays here: its option defaults come from its settings dataclass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from extract.bench.gpu_config import GpuBenchConfig
from extract.cli_bench import bench, bench_io_cmd
from extract.cli_run import blocks, presets, run
from extract.cli_schedule import schedule
from extract.cli_stores import backbone, features, pixels
from extract.data.registry import DATASETS
from extract.generate.commands import add_generate_commands
from extract.models.adm_presets import PRESETS
from extract.store.cli_options import STORE, int_list, user_errors
from extract.store.config import FORWARD_DTYPES
from extract.store.config_files import add_config_option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """diffprobe extract: cache diffusion U-Net block features in sharded Zarr stores.

    `run` extracts; `blocks` prints a model's block numbering. Each command has --help.
    """


@cli.command()
def datasets():
    """List the dataset registry: splits, official sizes, classes, options and expected layout."""
    for spec in DATASETS.values():
        sizes = (
            ", ".join(f"{s} {spec.official[s]:,}" if s in spec.official else s for s in spec.splits)
            or "any split"
        )
        classes = (
            spec.classes if not isinstance(spec.classes, dict) else "/".join(map(str, spec.classes.values()))
        )
        click.echo(f"{spec.name}: {spec.description}")
        click.echo(f"  splits: {sizes}" + (f"; classes: {classes}" if classes else ""))
        for key, values in spec.options.items():
            click.echo(f"  --data-opt {key}={'|'.join(values)} (default {values[0]})")
        for key, default in spec.free_options.items():
            click.echo(f"  --data-opt {key}=<any> (default {default})")
        click.echo(f"  layout: {spec.layout}")


@cli.command("check-data")
@click.option("--data", type=click.Choice(list(DATASETS)), required=True)
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--split", "splits", multiple=True, help="split(s) to check [default: all]")
@click.option("--data-opt", "data_opts", multiple=True, help="dataset option key=value")
@click.option(
    "--decode/--no-decode",
    default=False,
    help="decode every image fully (slower) instead of checking its structure",
)
@click.option("--workers", type=click.IntRange(min=1), default=4, help="threads reading images")
@click.option("--progress/--no-progress", default=True)
@user_errors
def check_data_cmd(data, data_root, splits, data_opts, decode, workers, progress):
    """Validate a dataset tree: annotation files, counts against the official splits, missing
    and unreadable images. Exit 0 when all is well, else list the problems and exit 1."""
    from extract.data.checkdata import check_data, format_check

    check = check_data(data, data_root, splits, data_opts, decode=decode, workers=workers, progress=progress)
    click.echo(format_check(check))
    sys.exit(1 if check.problems else 0)


_GPU = GpuBenchConfig()  # the defaults live in the config


@cli.command("bench-gpu")
@click.option(
    "--quick",
    is_flag=True,
    help="quick mode, under 4 minutes on one GPU (about 1-1.5 min on an H200): batch 64, bf16 and fp16, "
    "channels_last on and off, no compile, no loader; then the store's read rate and a bit-identity check "
    "of two extractions on the device. Options given still win",
)
@click.option(
    "--model",
    default=_GPU.model,
    help="an ADM or SD/DiT preset (`presets` lists them; random weights; SD/DiT: the denoiser on "
    "random latents)",
)
@click.option(
    "-b", "--block", type=click.IntRange(min=1), default=_GPU.block, help="stop the forward after this block"
)
@click.option(
    "--batch",
    "batches",
    multiple=True,
    default=(",".join(map(str, _GPU.batches)),),
    callback=int_list,
    help="batch sizes, repeated or comma-separated [--quick: 64]",
)
@click.option(
    "--dtype",
    "dtypes",
    multiple=True,
    type=click.Choice(list(FORWARD_DTYPES)),
    default=_GPU.dtypes,
    help="autocast dtypes, repeated",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="only with / only without channels_last [default: both]",
)
@click.option(
    "--compile/--no-compile",
    "compiled",
    default=None,
    help="only with / only without torch.compile [default: both; --quick: without]",
)
@click.option(
    "--compile-backend",
    default=_GPU.compile_backend,
    help="torch.compile backend ('eager' only traces: a CPU check)",
)
@click.option(
    "--cudnn-benchmark/--no-cudnn-benchmark",
    default=_GPU.cudnn_benchmark,
    help="let cuDNN pick algorithms by timing (off: fixed ones, as `extract run`)",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=1),
    default=_GPU.warmup,
    help="untimed steps per case (the first compiles)",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=_GPU.repeats,
    help="timed steps per case (median reported)",
)
@click.option(
    "--workers",
    "loader_workers",
    multiple=True,
    default=(",".join(map(str, _GPU.loader_workers)),),
    callback=int_list,
    help="DataLoader worker counts to time",
)
@click.option(
    "--loader-images",
    type=click.IntRange(min=0),
    default=_GPU.loader_images,
    help="synthetic JPEGs to decode (0: skip the loader part) [--quick: 0]",
)
@click.option(
    "--io-rows",
    type=click.IntRange(min=1),
    default=_GPU.io_rows,
    help="--quick: rows of the synthetic fp16 store read back",
)
@click.option(
    "--io-dim",
    type=click.IntRange(min=4),
    default=_GPU.io_dim,
    help="--quick: features per store row, a multiple of 4, stored as (dim/4, 2, 2)",
)
@click.option(
    "--io-shard-rows",
    type=click.IntRange(min=1),
    default=_GPU.io_shard_rows,
    help="--quick: rows per shard of that store",
)
@click.option(
    "--identity-model",
    type=click.Choice(list(PRESETS)),
    default=_GPU.identity_model,
    help="--quick: the small preset extracted twice (random weights)",
)
@click.option(
    "--identity-images",
    type=click.IntRange(min=0),
    default=_GPU.identity_images,
    help="--quick: generated images it extracts (0: skip the check)",
)
@click.option(
    "--identity-dtype",
    "identity_dtypes",
    multiple=True,
    type=click.Choice(list(FORWARD_DTYPES)),
    default=_GPU.identity_dtypes,
    help="--quick: autocast dtypes of the identity check, repeated",
)
@click.option(
    "--time-budget",
    "time_budget_s",
    type=click.FloatRange(min=0, min_open=True),
    default=_GPU.time_budget_s,
    help="--quick: seconds after which parts and cases not begun are skipped",
)
@click.option("--device", default=_GPU.device, help="cuda, cuda:1, or cpu (a correctness check only)")
@click.option(
    "--peak-tflops",
    type=click.FloatRange(min=0, min_open=True),
    help="the GPU's peak dense bf16 TFLOP/s [default: looked up by GPU name]",
)
@click.option("--out", type=click.Path(path_type=Path), help="also write the results as JSON")
@user_errors
def bench_gpu_cmd(quick, channels_last, compiled, out, **options):
    """Early-exit images/s on a GPU (adm256 b=24) by batch, dtype, channels_last and compile;
    the fraction of peak FLOP/s; whether JPEG loading keeps up. With --quick: one batch, no
    compile and no loader, plus the feature store's read rate and a GPU bit-identity check."""
    from click.core import ParameterSource

    from extract.bench.gpu import format_report

    both = {None: (False, True), False: (False,), True: (True,)}
    if quick:
        from extract.bench.gpu_config import quick_config
        from extract.bench.gpu_quick import run_quick_bench

        ctx = click.get_current_context()
        given = {
            k: v for k, v in options.items() if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT
        }
        flags = {"channels_last": both[channels_last]} | (
            {} if compiled is None else {"compile": both[compiled]}
        )
        result = run_quick_bench(quick_config(**given, **flags))
    else:
        from extract.bench.gpu import run_gpu_bench

        result = run_gpu_bench(
            GpuBenchConfig(channels_last=both[channels_last], compile=both[compiled], **options)
        )
    click.echo(format_report(result))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"written to {out}")


@cli.command()
@click.argument("stores", nargs=-1, required=True, type=STORE)
@click.option(
    "--repair/--no-repair", default=False, help="re-extract only the bad shards (needs the model and data)"
)
@click.option("--ckpt", type=click.Path(path_type=Path), help="with --repair: the checkpoint, if it moved")
@click.option("--data-root", type=click.Path(path_type=Path), help="with --repair: the dataset, if it moved")
@user_errors
def verify(stores, repair, ckpt, data_root):
    """Check stores are whole: every shard written, every chunk's checksum, no NaN in valid rows,
    consistent labels/ids. Exit 0, or list the problems and exit 1."""
    from extract.repair import repair_store
    from extract.store.verify import verify_store

    failed = False
    for store in stores:
        problems = repair_store(store, ckpt, data_root) if repair else verify_store(store)
        if problems:
            failed = True
            click.echo(f"{store}: {len(problems)} problem(s)")
            for p in problems:
                click.echo(f"  - {p}")
        else:
            click.echo(f"{store}: ok")
    sys.exit(1 if failed else 0)


for command in (run, blocks, schedule, presets, pixels, backbone, features, bench, bench_io_cmd):
    cli.add_command(command)
add_generate_commands(cli)
add_config_option(cli)  # every command takes --config FILE


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="python -m extract")
