"""`--model-flags`: guided-diffusion's (and improved-diffusion's) published flag lines build the
U-Net guided-diffusion's own create_model builds, and run end to end like a preset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from extract.cli import cli
from extract.models.adm import build_unet, shapes_of
from extract.models.adm_flags import MODEL_FLAGS, canonical_flags, parse_flags, preset_from_flags
from extract.models.adm_forward import AdmForward
from extract.models.adm_presets import PRESETS
from extract.store.schema import FeatureKey, FeatureStore

# guided-diffusion's README, 64x64 class-conditional ImageNet (MODEL_FLAGS as published)
IMAGENET64 = (
    "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 64 "
    "--learn_sigma True --noise_schedule cosine "
    "--num_channels 192 --num_head_channels 64 --num_res_blocks 3 --resblock_updown True "
    "--use_new_attention_order True "
    "--use_fp16 True --use_scale_shift_norm True"
)
# improved-diffusion's README, CIFAR-10
CIFAR_MODEL = "--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3"
CIFAR_DIFFUSION = "--diffusion_steps 4000 --noise_schedule cosine"
# a small class-conditional U-Net for the end-to-end runs
SMALL = (
    "--image_size 32 --channel_mult 1,2 --num_channels 32 --num_res_blocks 1 --attention_resolutions 16 "
    "--num_head_channels 16 --class_cond True --learn_sigma True"
)


def script_util():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from guided_diffusion import script_util

    return script_util


def gd_shapes(**flags) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of guided-diffusion's own create_model with these flags (defaults for
    the rest), built on the meta device."""
    su = script_util()
    defaults = su.model_and_diffusion_defaults()
    args = {
        k: flags.get(k, defaults[k])
        for k in (
            "image_size",
            "num_channels",
            "num_res_blocks",
            "channel_mult",
            "learn_sigma",
            "class_cond",
            "use_checkpoint",
            "attention_resolutions",
            "num_heads",
            "num_head_channels",
            "num_heads_upsample",
            "use_scale_shift_norm",
            "dropout",
            "resblock_updown",
            "use_fp16",
            "use_new_attention_order",
        )
    }
    with torch.device("meta"):
        model = su.create_model(**args)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_the_defaults_are_guided_diffusions_own():
    defaults = script_util().model_and_diffusion_defaults()
    for name, (_, ours) in MODEL_FLAGS.items():
        theirs = defaults[name]
        assert (",".join(map(str, ours)) if isinstance(ours, tuple) else ours) == theirs, name


def test_the_64x64_imagenet_flags_give_its_preset():
    p = preset_from_flags(IMAGENET64)
    assert p.name.startswith("flags:") and len(p.name) == len("flags:") + 10
    assert (p.image_size, p.num_channels, p.num_res_blocks, p.num_head_channels, p.num_heads) == (
        64,
        192,
        3,
        64,
        4,
    )
    assert p.channel_mult == (1, 2, 3, 4) and p.attention_resolutions == (32, 16, 8)
    assert (
        p.class_cond
        and p.learn_sigma
        and p.resblock_updown
        and p.use_new_attention_order
        and p.use_scale_shift_norm
    )
    assert (p.noise_schedule, p.diffusion_steps, p.rescale_timesteps, p.in_channels) == (
        "cosine",
        1000,
        False,
        3,
    )
    assert parse_flags(p.flags) == {
        k: v for k, v in parse_flags(IMAGENET64).items() if k != "use_fp16"
    }  # forward flags, sorted
    assert (
        "--use_fp16 True" in canonical_flags(IMAGENET64) and "use_fp16" not in p.flags
    )  # recorded in the config, not the key
    assert p.unet_kwargs()["attention_resolutions"] == (2, 4, 8) and p.unet_kwargs()["num_classes"] == 1000
    assert shapes_of(p) == shapes_of(PRESETS["adm64-cond"])  # the preset of the same checkpoint


def test_the_64x64_imagenet_unet_is_guided_diffusions():
    ours = shapes_of(preset_from_flags(IMAGENET64))
    theirs = gd_shapes(
        attention_resolutions="32,16,8",
        class_cond=True,
        image_size=64,
        learn_sigma=True,
        num_channels=192,
        num_head_channels=64,
        num_res_blocks=3,
        resblock_updown=True,
        use_new_attention_order=True,
        use_fp16=True,
        use_scale_shift_norm=True,
    )
    assert list(ours) == list(theirs) and ours == theirs


def test_the_cifar10_flags_need_improved_diffusions_defaults(tmp_path):
    with pytest.raises(
        ValueError, match=r"no default --channel_mult for --image_size 32 .*--flavor improved"
    ):
        preset_from_flags(f"{CIFAR_MODEL} {CIFAR_DIFFUSION}")
    flags_file = tmp_path / "cifar10.sh"
    flags_file.write_text(
        f'# improved-diffusion, CIFAR-10\nMODEL_FLAGS="{CIFAR_MODEL}"\n'
        f'export DIFFUSION_FLAGS="{CIFAR_DIFFUSION}"\nFLAVOR="--flavor improved"\n'
    )
    p = preset_from_flags(f"@{flags_file}")
    assert (
        preset_from_flags(str(flags_file))
        == p
        == preset_from_flags(f"--flavor improved {CIFAR_MODEL} {CIFAR_DIFFUSION}")
    )
    assert (p.image_size, p.num_channels, p.num_res_blocks, p.channel_mult, p.attention_resolutions) == (
        32,
        128,
        3,
        (1, 2, 2, 2),
        (16, 8),
    )
    assert (
        p.num_heads,
        p.num_head_channels,
        p.resblock_updown,
        p.use_new_attention_order,
        p.use_scale_shift_norm,
    ) == (4, -1, False, False, True)
    assert p.learn_sigma and not p.class_cond and (p.diffusion_steps, p.noise_schedule) == (4000, "cosine")
    assert p.rescale_timesteps  # improved-diffusion fed its U-Net t * 1000 / 4000
    assert (
        "--dropout" not in p.flags
        and "--flavor improved" in p.flags
        and "--dropout 0.3" in canonical_flags(f"@{flags_file}")
    )
    theirs = gd_shapes(
        image_size=32,
        num_channels=128,
        num_res_blocks=3,
        channel_mult="1,2,2,2",
        learn_sigma=True,
        dropout=0.3,
    )
    assert shapes_of(p) == theirs
    # guided-diffusion's flags with an explicit channel_mult build the same U-Net, without the rescaling
    guided = preset_from_flags(f"{CIFAR_MODEL} {CIFAR_DIFFUSION} --channel_mult 1,2,2,2")
    assert shapes_of(guided) == theirs and not guided.rescale_timesteps and guided.name != p.name


def test_the_flag_line_is_written_one_way_and_names_what_it_builds():
    a = preset_from_flags("--num_channels 64 --learn_sigma true --image_size=64")
    b = preset_from_flags('MODEL_FLAGS="--image_size 64 --learn_sigma 1" DIFFUSION_FLAGS="--num_channels 64"')
    assert a == b and a.flags == "--image_size 64 --learn_sigma True --num_channels 64"
    recorded = preset_from_flags(
        a.flags + " --use_fp16 True --dropout 0.1 --lr 1e-4 --batch_size 4 --model_path /x/model.pt"
    )
    assert (
        recorded == a
    )  # the same U-Net: recorded-only flags (paths, lr, ...) leave the preset and the store key alone
    assert preset_from_flags("--num_channels 96 --learn_sigma True").name != a.name
    assert preset_from_flags("--flavor guided --image_size 64") == preset_from_flags("--image_size 64")
    assert canonical_flags(a.flags) == a.flags


def test_presets_keep_their_dict():
    for p in PRESETS.values():
        assert "flags" not in p.to_dict() and "rescale_timesteps" not in p.to_dict()
    assert preset_from_flags(SMALL).to_dict()["flags"] == canonical_flags(SMALL)


@pytest.mark.parametrize(
    "flags,fragment",
    [
        ("--image_size 64 --colour red", "unknown flag --colour"),
        ("--image_size 6x4", "--image_size '6x4': expected a positive integer"),
        ("--class_cond maybe", "--class_cond 'maybe': expected True or False"),
        ("--noise_schedule sqrt", "expected linear or cosine"),
        ("--image_size", "--image_size needs a value"),
        ("--image_size 64 --image_size 128", "--image_size given twice"),
        ("$MODEL_FLAGS", "is neither flags (--image_size 64 ...) nor a file of them"),
        ("# only a comment\n--", "expected a --flag, got '--'"),
        ("--image_size 64 $MODEL_FLAGS", "expected a --flag, got '$MODEL_FLAGS'"),
        ("--flavor improved --resblock_updown True", "--resblock_updown is a flag of guided-diffusion only"),
        ("--sigma_small True", "add --flavor improved"),
        ("--image_size 48", "no default --channel_mult for --image_size 48"),
        ("--image_size 36 --channel_mult 1,2,3,4", "does not halve 3 times"),
    ],
)
def test_a_bad_flag_is_one_error_naming_it(flags, fragment):
    with pytest.raises(ValueError) as e:
        preset_from_flags(flags)
    assert fragment in str(e.value)


def test_rescaled_timesteps_reach_the_unet():
    p = preset_from_flags(
        "--flavor improved --image_size 32 --num_channels 32 --num_res_blocks 1 --diffusion_steps 4000"
    )
    assert p.rescale_timesteps and parse_flags(p.flags)["flavor"] == "improved"
    torch.manual_seed(0)
    model = build_unet(p)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([400, 2000])
    seen = []
    model.time_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    AdmForward(model, p, None).capture(x, t, [3])
    from guided_diffusion.nn import timestep_embedding  # imported (warnings filtered) with the U-Net above

    assert torch.equal(seen[0], timestep_embedding(torch.tensor([100.0, 500.0]), 32))


# ---------------------------------------------------------------- the command line, end to end
@pytest.fixture
def fashion_mnist(monkeypatch, fmnist_dir) -> Path:
    """The real Fashion-MNIST when it is installed, else the look-alike."""
    real = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    root = real if (real / "t10k-images-idx3-ubyte.gz").is_file() else fmnist_dir
    monkeypatch.setenv("FASHION_MNIST_DIR", str(root))
    return root


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, fragment):
    text = result.output.strip()
    assert result.exit_code != 0 and "Traceback" not in text and fragment in text, text
    assert len(text.splitlines()) == 1, text


def run_args(flags: str, ckpt: Path, out: Path, *more):
    return (
        "run",
        "--model-flags",
        flags,
        "--ckpt",
        ckpt,
        "--limit",
        8,
        "-t",
        10,
        "-b",
        2,
        "--pool",
        1,
        "--split",
        "test",
        "--out",
        out,
        "--no-progress",
        *more,
    )


@pytest.fixture
def small_ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "small.pt"
    torch.save(build_unet(preset_from_flags(SMALL)).state_dict(), path)
    return path


@pytest.mark.slow
def test_run_with_flags_end_to_end(tmp_path, fashion_mnist, small_ckpt):
    out = tmp_path / "s.zarr"
    result = invoke(*run_args(SMALL, small_ckpt, out))
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(out)
    preset = preset_from_flags(SMALL)
    key, made = store.attrs["key"], store.attrs["provenance"]
    assert made["preset"] == preset.name and made["config"]["model_flags"] == canonical_flags(SMALL)
    assert (
        key["model"]["name"] == preset.name
        and key["model"]["flags"] == preset.flags
        and key["model"]["in_channels"] == 3
    )
    assert key["class_label"] == 0  # class-conditional: fed label 0, as presets are
    assert store.group[FeatureKey(10, 2, 1).path].shape == (
        8,
        32,
        1,
        1,
    )  # input_blocks.1 at 32 channels, pooled to 1x1
    # the same flags, spelled otherwise and from a file, resume it (nothing to compute)
    flags_file = tmp_path / "flags.sh"
    words = SMALL.split()
    flags_file.write_text(
        f'MODEL_FLAGS="{" ".join(" ".join(words[i : i + 2]) for i in reversed(range(0, len(words), 2)))}"\n'
    )
    again = invoke(*run_args(f"@{flags_file}", small_ckpt, out))
    assert again.exit_code == 0 and ": 0 images in" in again.output and "1/1 shards" in again.output, (
        again.output
    )
    # flags that only get recorded leave the U-Net, and so the store, as it was; a forward flag does not
    recorded = invoke(*run_args(SMALL + " --dropout 0.1 --use_fp16 True", small_ckpt, out))
    assert recorded.exit_code == 0 and ": 0 images in" in recorded.output, recorded.output
    other = invoke(
        *run_args(SMALL + " --noise_schedule cosine", small_ckpt, out)
    )  # the same weights, other noise
    assert_one_line_error(other, "was made with other arguments")
    # --class-label as for presets
    labelled = invoke(*run_args(SMALL, small_ckpt, tmp_path / "l.zarr", "--class-label", 7))
    assert labelled.exit_code == 0 and FeatureStore.open(tmp_path / "l.zarr").attrs["key"]["class_label"] == 7
    assert_one_line_error(
        invoke(*run_args(SMALL, small_ckpt, tmp_path / "x.zarr", "--class-label", 1000)),
        "--class-label must be in [0, 1000)",
    )


def test_a_checkpoint_of_other_flags_is_one_error(tmp_path, fashion_mnist, small_ckpt):
    flags = SMALL.replace("--num_channels 32", "--num_channels 64")
    result = invoke(*run_args(flags, small_ckpt, tmp_path / "s.zarr"))
    assert_one_line_error(result, f"does not fit preset '{preset_from_flags(flags).name}'")
    assert "shape mismatches" in result.output and not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--model-flags", "--image_size 64 --colour red"), "unknown flag --colour"),
        (("--model-flags", "--num_res_blocks two"), "--num_res_blocks 'two': expected a positive integer"),
        (("--model-flags", "@/nonexistent/flags.sh"), "file not found"),
        (("--model", "tiny", "--model-flags", SMALL), "--model and --model-flags exclude each other"),
        (
            ("--model-flags", "--image_size 64 --num_channels 96 --num_head_channels 64"),
            "cannot build this U-Net",
        ),
    ],
)
def test_bad_flags_on_the_command_line_are_one_line(tmp_path, fashion_mnist, args, fragment):
    for command in (("run", "--random-init", "--out", tmp_path / "s.zarr", "--no-progress"), ("blocks",)):
        assert_one_line_error(invoke(*command, *args), fragment)
    assert not (tmp_path / "s.zarr").exists()


def test_blocks_and_plan_with_flags():
    result = invoke("blocks", "--model-flags", IMAGENET64)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{preset_from_flags(IMAGENET64).name}: {preset_from_flags(IMAGENET64).flags}"
    rows = [line.split() for line in lines[2:]]
    assert (
        len(rows) == 33
        and rows[16][:2] == ["17", "middle_block"]
        and rows[16][-3:] == ["768", "8x8", "49152"]
    )
    plan = invoke(
        "run",
        "--model-flags",
        IMAGENET64,
        "--data",
        "imagenet",
        "--data-root",
        "/nonexistent",
        "--split",
        "val",
        "--out",
        "p.zarr",
        "--plan",
    )
    assert (
        plan.exit_code == 0 and "50,000 rows (official)" in plan.output and "GFLOP per forward" in plan.output
    ), plan.output
