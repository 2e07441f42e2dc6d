import pickle

import pytest
import torch

from extract.models import gd
from extract.models.adm import build_unet, count_parameters, load_checkpoint, random_unet
from extract.models.adm_presets import PRESETS, get_preset
from extract.models.weights import CheckpointError, read_state_dict


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="adm256-uncond"):
        get_preset("adm999")


def test_guided_diffusion_zero_init_is_undone_for_the_random_control():
    preset = PRESETS["tiny"]
    plain = build_unet(preset)
    zeroed = [m.out_layers[-1].weight for m in plain.modules() if isinstance(m, gd.ResBlock)]
    zeroed += [m.proj_out.weight for m in plain.modules() if isinstance(m, gd.AttentionBlock)]
    assert zeroed and all(float(w.detach().abs().max()) == 0.0 for w in zeroed)
    control = random_unet(preset, seed=0)
    for m in control.modules():
        if isinstance(m, gd.ResBlock):
            assert float(m.out_layers[-1].weight.detach().abs().max()) > 0
        if isinstance(m, gd.AttentionBlock):
            assert float(m.proj_out.weight.detach().abs().max()) > 0


def test_random_control_is_a_function_of_the_seed():
    a, b, c = (random_unet(PRESETS["tiny"], seed=s).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_round_trip(tmp_path):
    preset = PRESETS["tiny"]
    original = random_unet(preset, seed=3)
    path = tmp_path / "tiny.pt"
    torch.save(original.state_dict(), path)
    loaded = load_checkpoint(preset, path)
    for k, v in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_checkpoint_of_another_architecture_is_refused_with_keys_and_fitting_presets(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(build_unet(PRESETS["tiny"]).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(PRESETS["adm64-cond"], path)
    message = str(err.value)
    assert "missing keys: label_emb.weight" in message
    assert "shape mismatches: time_embed.0.weight (128, 32) in file vs (768, 192) in model" in message
    assert "presets that fit this file: tiny" in message


def test_not_a_torch_file_is_one_clear_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a loadable weights-only torch checkpoint"):
        read_state_dict(path)


def test_a_truncated_checkpoint_is_one_clear_error(tmp_path):
    full = tmp_path / "full.pt"
    torch.save(build_unet(PRESETS["tiny"]).state_dict(), full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt: not a loadable weights-only torch checkpoint"):
        load_checkpoint(PRESETS["tiny"], cut)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert "code ran" not in capsys.readouterr().out


def test_the_shipped_demo_weights_load_safely_and_are_small():
    from extract.models.adm import shipped_weights
    from extract.models.weights import file_sha256

    preset = PRESETS["demo-fmnist"]
    path = shipped_weights(preset)
    assert path.stat().st_size <= 25 * 2**20
    model = load_checkpoint(preset, path)
    assert count_parameters(model) == 8_673_505 and not model.training
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert file_sha256(path) in card  # the card describes exactly this file


def test_presets_without_shipped_weights_say_so():
    from extract.models.adm import shipped_weights

    with pytest.raises(
        FileNotFoundError, match="model 'tiny' has no shipped weights; pass --ckpt FILE or --random-init"
    ):
        shipped_weights(PRESETS["tiny"])


def test_one_registry_names_every_model_with_its_family_and_preset():
    from extract.models.adm_options import AdmOptions
    from extract.models.backbone_options import BACKBONE_NAMES
    from extract.models.backbones import BACKBONES
    from extract.models.diffusers_spec import PRESET_SPECS
    from extract.models.families import MODELS, PRESET_FAMILY, options_class, preset_of
    from extract.models.latent_options import LatentOptions
    from extract.models.latent_presets import LATENT_PRESETS

    assert MODELS["tiny"].family == "adm" and preset_of("tiny") is PRESETS["tiny"] is MODELS["tiny"].preset
    assert MODELS["tiny-sd"].family == "latent" and preset_of("tiny-sd") is LATENT_PRESETS["tiny-sd"]
    assert MODELS["sdxl"].preset is PRESET_SPECS["sdxl"] and MODELS["diffusers"].preset is None
    assert BACKBONE_NAMES == tuple(BACKBONES) == tuple(n for n, m in MODELS.items() if m.family == "backbone")
    assert set(PRESET_FAMILY) == set(MODELS) - set(BACKBONE_NAMES)
    assert options_class("tiny-dit") is LatentOptions and options_class("adm64-cond") is AdmOptions
    flags = (
        "--image_size 32 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --attention_resolutions 8"
    )
    assert preset_of("demo-fmnist", AdmOptions(model_flags=flags)).name.startswith("flags:")
    with pytest.raises(ValueError, match="unknown model preset 'nope'; choose one of: adm256-uncond"):
        preset_of("nope")
    with pytest.raises(ValueError, match="--model diffusers needs --model-dir"):
        preset_of("diffusers")
