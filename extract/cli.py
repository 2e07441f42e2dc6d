"""`python -m extract`: thin click commands over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from extract.bench.gpu_config import GpuBenchConfig
from extract.data.augment import AUGMENTATIONS
from extract.data.registry import DATASETS
from extract.generate.commands import add_generate_commands
from extract.models.adm_flags import model_flags_option, take_model_flags
from extract.models.adm_presets import MODEL_NAMES, PRESETS
from extract.models.diffusers_spec import DIFFUSERS_MODELS
from extract.store.cli_options import int_list, key_options, pool_list, user_errors
from extract.store.config import FORWARD_DTYPES, DataSelection, ExtractConfig, StoreOptions, flat, from_flat
from extract.store.config_files import add_config_option
from extract.store.schema import STORE_DTYPES

BACKBONE_NAMES = (
    "torchvision:resnet50",
    "torchvision:vit_b_16",
)  # extract.models.backbones.BACKBONES, without importing torchvision


_SEL, _STORE = DataSelection(), StoreOptions(out=Path("."))  # the defaults the options show


def data_options(fn):
    """--data, --data-root and the subset options, shared by every command that reads a dataset."""
    for option in reversed(
        [
            click.option(
                "--data",
                type=click.Choice(list(DATASETS)),
                default=_SEL.data,
                help="dataset (`python -m extract datasets` lists them with their layouts)",
            ),
            click.option(
                "--data-root", type=click.Path(path_type=Path), help="dataset location (folder or file)"
            ),
            click.option(
                "--data-opt",
                "data_opts",
                multiple=True,
                help="dataset option key=value, e.g. level=family (aircraft), labels=coarse (cifar100), label=json:class (webdataset), image=img label=fine_label (hf); `datasets` lists each one's",
            ),
            click.option(
                "--classes",
                "classes_file",
                type=click.Path(path_type=Path),
                help="file of classes to keep (synsets or names, one a line); labels renumbered",
            ),
            click.option(
                "--subset",
                type=click.Path(path_type=Path),
                help="file of images to keep (ids or file names, one a line), e.g. ImageNet's 1%/10% lists",
            ),
            click.option(
                "--per-class",
                type=click.IntRange(min=1),
                help="keep N images of each class, drawn with --seed",
            ),
            click.option(
                "--order",
                type=click.Choice(["sorted", "shuffled"]),
                default=_SEL.order,
                help="row order of the store: dataset order (class by class), or a seeded shuffle so consecutive rows mix classes",
            ),
            click.option(
                "--data-seed",
                type=int,
                help="seeds --per-class, --limit and --order alone, so that several --seed (noise) runs read the same images [default: --seed]",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """diffprobe extract: cache diffusion U-Net block features in sharded Zarr stores.

    `run` extracts; `blocks` prints a model's block numbering. Each command has --help.
    """


@cli.command()
@click.option(
    "--model",
    type=click.Choice([*MODEL_NAMES, *DIFFUSERS_MODELS, *BACKBONE_NAMES]),
    default="demo-fmnist",
    help="model preset (ADM, SD/DiT/SDXL latent diffusion), 'diffusers' (any local diffusers folder, --model-dir), or a torchvision backbone (see `backbone --help`)",
)
@model_flags_option
@click.option(
    "--ckpt",
    "--weights",
    "ckpt",
    type=click.Path(path_type=Path),
    help="state_dict file (e.g. 256x256_diffusion_uncond.pt; for SD/DiT the denoiser's .safetensors, e.g. a CleanDIFT U-Net) [default: the preset's shipped weights, if any]",
)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    help="SD/DiT: a local diffusers model folder (unet/ or transformer/, vae/, text_encoder/, tokenizer/, scheduler/)",
)
@click.option("--prompt", default="", help="SD: the prompt every image is paired with (encoded once per run)")
@click.option(
    "--cond",
    type=click.Path(path_type=Path),
    help="--model diffusers: a safetensors file of the text conditioning (prompt_embeds, pooled_prompt_embeds), "
    "for models whose text encoders are absent or huge (SD3)",
)
@click.option(
    "--latents",
    type=click.Path(path_type=Path),
    help="SD/DiT: the VAE latent cache store, shared by runs on the same images [default: latents/<model>-<hash>.zarr beside --out]",
)
@click.option("--random-init/--no-random-init", default=False, help="random-weight control instead of --ckpt")
@data_options
@click.option("--split", default=_SEL.split, help="dataset split")
@click.option(
    "--aug",
    type=click.Choice(list(AUGMENTATIONS)),
    default="none",
    help="view v of each image is seeded: gd-crop-flip as diffssl's training loader (short side to [S, S/0.8], random S crop, flip); crop-flip (0.8-1.0 of the short side, flip); training splits",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="store to create or resume (a .zarr folder)"
)
@key_options(
    t_default=("150",),
    pool_default=("2",),
    what="features to cache [default block: output_blocks[4], the paper's b=24]",
    module_names=True,
)
@click.option(
    "--block-pool",
    "block_pools",
    multiple=True,
    metavar="B:P",
    help="block B's own pools instead of --pool, e.g. 30:16 (b=30 pooled to 16x16) or 19:full,2 (repeat)",
)
@click.option(
    "--views",
    type=click.IntRange(min=1),
    default=1,
    help="independent noise draws (and, with --aug, crops) per image",
)
@click.option("--seed", type=int, default=0, help="noise (and random-init) seed")
@click.option("--limit", type=click.IntRange(min=1), help="a seeded random subset of this many images")
@click.option(
    "--dtype", type=click.Choice(list(FORWARD_DTYPES)), default="fp32", help="autocast dtype of the forward"
)
@click.option(
    "--store-dtype", type=click.Choice(list(STORE_DTYPES)), default="float16", help="dtype of cached features"
)
@click.option(
    "--class-label",
    type=int,
    help="label given to class-conditional models (all images) [default: 0; DiT: 1000, the null class]",
)
@click.option(
    "--shard-rows",
    type=click.IntRange(min=1),
    default=_STORE.shard_rows,
    help="rows per shard (the unit of work and resume)",
)
@click.option(
    "--micro-batch",
    type=click.IntRange(min=1),
    default=16,
    help="images per forward; part of the cache key (kernels round by batch shape)",
)
@click.option(
    "--skip-bad/--no-skip-bad", default=False, help="skip unreadable images (NaN rows, listed in attrs)"
)
@click.option(
    "--skip-small-maps/--no-skip-small-maps",
    default=False,
    help="leave out (b, pool) pairs whose pool is larger than the block's map, instead of refusing (e.g. -b all --pool 1,2,4)",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    help="images per loader step (rounded up to a multiple of --micro-batch); does not change results",
)
@click.option("--workers", type=click.IntRange(min=0), default=0, help="DataLoader workers")
@click.option("--device", help="cpu, cuda, cuda:1 ... [default: cuda if available]")
@click.option("--overwrite/--no-overwrite", default=False, help="replace a store made with other arguments")
@click.option(
    "--allow-mismatch/--no-allow-mismatch",
    default=False,
    help="resume a store made with another --micro-batch or device: "
    "the shards still to write differ from the others by float rounding (recorded in the store's attrs as resumed_with)",
)
@click.option("--progress/--no-progress", default=True, help="show a progress bar")
@click.option(
    "--plan",
    is_flag=True,
    help="print what the run would cost (rows, size on disk, U-Net FLOPs, hours) and write nothing",
)
@click.option(
    "--images-per-s",
    type=click.FloatRange(min=0, min_open=True),
    help="with --plan: measured forwards (one image, one t) per second, for hours",
)
@user_errors
def run(plan, images_per_s, **options):
    """Extract features of the chosen blocks, timesteps and pool sizes into one store."""
    from extract.run import extract

    options["model_flags"] = take_model_flags(options["model_flags"])
    if plan:
        from extract.cost import plan as plan_run

        click.echo(plan_run(from_flat(ExtractConfig, **options), images_per_s).line())
        return
    if options["model"] in BACKBONE_NAMES:  # `--model torchvision:resnet50 --weights FILE`: no noise, no t
        from extract.models.backbones import BackboneConfig, extract_backbone

        names = set(flat(from_flat(BackboneConfig, out=options["out"])))
        ctx = click.get_current_context()
        flags = {p.name: max(p.opts, key=len) for p in ctx.command.params}
        given = [
            flags[k]
            for k in options
            if k not in names | {"ckpt"}
            and ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)}: not options of {options['model']} (a backbone has no noise, timestep, views or forward dtype); leave them out"
            )
        click.echo(
            extract_backbone(
                from_flat(
                    BackboneConfig,
                    weights=options["ckpt"],
                    **{k: v for k, v in options.items() if k in names},
                )
            )
        )
        return
    summary = extract(from_flat(ExtractConfig, **options))
    click.echo(summary.line())


@cli.command()
@click.option(
    "--model",
    type=click.Choice([*MODEL_NAMES, *DIFFUSERS_MODELS]),
    default="adm256-uncond",
    help="model preset, or 'diffusers' with --model-dir",
)
@model_flags_option
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    help="--model diffusers: the local diffusers folder whose denoiser to number",
)
@user_errors
def blocks(model, model_flags, model_dir):
    """Print b -> module, layers, channels and resolution (no weights are allocated)."""
    from extract.models.families import block_table

    if take_model_flags(model_flags):  # the U-Net these flags build, named flags:<hash>
        from extract.models.adm_flags import flags_block_table

        preset, rows = flags_block_table(model_flags)
        click.echo(f"{preset.name}: {preset.flags}")
    else:
        rows = block_table(
            model, model_dir
        )  # SD/DiT: diffusers' modules, latent maps at the preset's resolution
    width = max(18, *(len(r.module) for r in rows))
    click.echo(f"{'b':>3}  {'module':<{width}} {'layers':<34} {'C':>5} {'H x W':>9} {'values':>9}")
    for r in rows:
        click.echo(
            f"{r.b:>3}  {r.module:<{width}} {r.layers:<34} {r.channels:>5} {f'{r.height}x{r.width}':>9} {r.numel:>9}"
        )


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


@cli.command()
def presets():
    """List the model presets."""
    from extract.models.adm_presets import get_any_preset
    from extract.models.diffusers_spec import FOLDER_MODEL, PRESET_SPECS

    for name in MODEL_NAMES:
        p = get_any_preset(name)
        click.echo(f"{name:<15} {p.image_size:>4}px  {p.num_blocks:>2} blocks  {p.description}")
    for (
        name,
        spec,
    ) in PRESET_SPECS.items():  # their block tables need a forward: `extract blocks --model NAME`
        click.echo(f"{name:<15} {spec.image_size:>4}px   ? blocks  {spec.description}")
    click.echo(
        f"{FOLDER_MODEL:<15}   any           any local diffusers folder (--model-dir): U-Net or transformer, -b by module path"
    )
    click.echo(
        f"{'--model-flags':<15}   any           any guided-diffusion U-Net, from the flag line its README gives"
    )


@cli.command()
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


@cli.command("bench-io")
@click.option("--rows", type=click.IntRange(min=100), default=20000)
@click.option("--dim", type=click.IntRange(min=4), default=4096)
@click.option(
    "--store",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="also bench the rows of a real store",
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


_GPU = GpuBenchConfig()  # the defaults live in the config


@cli.command("bench-gpu")
@click.option(
    "--quick",
    is_flag=True,
    help="quick mode, under 4 minutes on one GPU (about 1-1.5 min on an H200): batch 64, bf16 and fp16, "
    "channels_last on and off, no compile, no loader; then the store's read rate and a bit-identity check of two extractions "
    "on the device. Options given still win",
)
@click.option(
    "--model",
    type=click.Choice(list(MODEL_NAMES)),
    default=_GPU.model,
    help="model preset (random weights; SD/DiT: the denoiser on random latents)",
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
@data_options
@click.option("--split", default=_SEL.split)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--image-size", type=click.IntRange(min=1), default=28)
@click.option("--channels", type=click.Choice(["1", "3"]), default="1")
@click.option("--limit", type=click.IntRange(min=1))
@click.option("--seed", type=int, default=0)
@click.option("--overwrite/--no-overwrite", default=False)
@click.option("--progress/--no-progress", default=True)
@user_errors
def pixels(channels, **options):
    """Store raw preprocessed pixels in the feature schema (the no-model baseline)."""
    from extract.models.pixels import PixelConfig, extract_pixels

    click.echo(extract_pixels(from_flat(PixelConfig, channels=int(channels), **options)))


@cli.command()
@click.option("--model", type=click.Choice(list(BACKBONE_NAMES)), default="torchvision:resnet50")
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="a local torchvision state_dict file (never downloaded)",
)
@click.option("--random-init/--no-random-init", default=False, help="random weights instead of --weights")
@data_options
@click.option(
    "--split",
    default="test",
    help="dataset split (BackboneConfig defaults to test: backbones are compared on held-out images)",
)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option(
    "-b",
    "--block",
    "blocks",
    multiple=True,
    callback=int_list,
    help="blocks (resnet50: 1-4 = layer1-4; vit_b_16: 1-12) [default: all]",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    default=("2",),
    callback=pool_list,
    help="pool sizes p (p x p), or 'full' for the whole map",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="a seeded random subset (the same rows as extract run --limit)",
)
@click.option("--seed", type=int, default=0)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=32, help="images loaded at once (speed only)"
)
@click.option(
    "--micro-batch",
    type=click.IntRange(min=1),
    default=16,
    help="images per forward, the last group zero-padded (in the store key; values do not depend on --batch-size)",
)
@click.option("--device", help="[default: cuda if available]")
@click.option("--overwrite/--no-overwrite", default=False)
@click.option("--progress/--no-progress", default=True)
@user_errors
def backbone(**options):
    """Features of a standard backbone (ResNet-50 stages, ViT-B/16 blocks) in the same store schema."""
    from extract.models.backbones import BackboneConfig, extract_backbone

    click.echo(extract_backbone(from_flat(BackboneConfig, **options)))


@cli.command()
@click.option(
    "--features",
    default="inception",
    help="inception | inception-logits | classifier:FILE | classifier-logits:FILE | torchvision:resnet50 | torchvision:vit_b_16 | pixels",
)
@click.option(
    "--inception-weights",
    type=click.Path(path_type=Path),
    help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (never downloaded)",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="a torchvision state_dict, for --features torchvision:*",
)
@click.option(
    "--random-init/--no-random-init",
    default=False,
    help="random network weights: a pipeline check, not an FID",
)
@data_options
@click.option("--split", default="test")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="a seeded random subset (the same rows as extract run --limit)",
)
@click.option(
    "--half",
    type=click.Choice(["first", "second"]),
    help="one half of a seeded permutation of the rows (the floor of a Fréchet distance)",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    help="[default: the network's input size, else the images' own]",
)
@click.option(
    "--channels", type=click.Choice(["1", "3"]), help="[default: the network's, else the first image's]"
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=100, help="images per forward (part of the store key)"
)
@click.option("--seed", type=int, default=0, help="seeds --limit and --half")
@click.option("--device", default="cpu")
@click.option("--overwrite/--no-overwrite", default=False)
@click.option("--progress/--no-progress", default=True)
@user_errors
def features(channels, **options):
    """Image-level features of a feature network (Inception-v3 for FID, the demo classifier, a
    torchvision backbone averaged over positions) as a store, for `analysis fd` and `analysis fid`."""
    from extract.models.feature_store import FeatureStoreConfig, extract_features

    click.echo(
        extract_features(
            from_flat(FeatureStoreConfig, channels=int(channels) if channels else None, **options)
        )
    )


@cli.command()
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=Path))
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


@cli.command()
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
@click.option("--dry-run/--run", default=False, help="print the commands without running them")
@user_errors
def experiment(name, row, sets, from_env, dry_run):
    """Run (or print) an experiment written as data: extract/experiments/NAME.toml. No NAME: list them."""
    import os

    from extract.experiments.runner import Runner, describe, from_environment, parse_sets

    if not name:
        click.echo(describe())
        return
    given = {**(from_environment(name, dict(os.environ)) if from_env else {}), **parse_sets(list(sets))}
    Runner(dry=dry_run).run(name, given, row)


add_generate_commands(cli)
add_config_option(cli)  # every command takes --config FILE


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="python -m extract")
