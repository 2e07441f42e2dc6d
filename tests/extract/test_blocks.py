import torch
from torch.utils.flop_counter import FlopCounterMode

from extract.models.adm import build_unet, count_parameters, random_unet
from extract.models.adm_blocks import block_table, capture, unet_blocks
from extract.models.adm_presets import PRESETS

# output (C, H, W) of every block of ADM 256x256 unconditional, measured with guided-diffusion's own model and
# the published flags
ADM256 = {
    **{b: (256, 256, 256) for b in (1, 2, 3)},
    **{b: (256, 128, 128) for b in (4, 5, 6)},
    7: (256, 64, 64),
    8: (512, 64, 64),
    9: (512, 64, 64),
    **{b: (512, 32, 32) for b in (10, 11, 12)},
    13: (512, 16, 16),
    14: (1024, 16, 16),
    15: (1024, 16, 16),
    **{b: (1024, 8, 8) for b in (16, 17, 18, 19, 20, 21)},
    **{b: (1024, 16, 16) for b in (22, 23, 24)},
    25: (1024, 32, 32),
    26: (512, 32, 32),
    27: (512, 32, 32),
    **{b: (512, 64, 64) for b in (28, 29, 30)},
    31: (512, 128, 128),
    32: (256, 128, 128),
    33: (256, 128, 128),
    **{b: (256, 256, 256) for b in (34, 35, 36, 37)},
}


def test_adm256_block_table_matches_facts():
    table = block_table(PRESETS["adm256-uncond"])
    assert [r.b for r in table] == list(range(1, 38))
    assert {r.b: (r.channels, r.height, r.width) for r in table} == ADM256
    assert table[18].module == "middle_block" and table[23].module == "output_blocks.4"
    assert table[23].numel == 262_144


def test_adm256_parameter_count_and_keys_on_meta():
    model = build_unet(PRESETS["adm256-uncond"], "meta")
    assert count_parameters(model) == 552_814_086
    keys = list(model.state_dict())
    assert len(keys) == 566 and keys[0] == "time_embed.0.weight" and keys[-1] == "out.2.bias"


def test_every_preset_numbers_its_blocks_consistently():
    for preset in PRESETS.values():
        model = build_unet(preset, "meta")
        assert len(unet_blocks(model)) == preset.num_blocks, preset.name


def _manual_walk(model, x, t):
    """A plain re-statement of UNetModel.forward, recording every block's output."""
    from guided_diffusion.nn import timestep_embedding

    from extract.models.gd import gaussian_diffusion  # noqa: F401 - import side effects only

    emb = model.time_embed(timestep_embedding(t, model.model_channels))
    h, hs, out = x, [], []
    for m in model.input_blocks:
        h = m(h, emb)
        hs.append(h)
        out.append(h)
    h = model.middle_block(h, emb)
    out.append(h)
    for m in model.output_blocks:
        h = m(torch.cat([h, hs.pop()], dim=1), emb)
        out.append(h)
    return {b: o for b, o in enumerate(out, start=1)}


def test_early_exit_equals_full_forward_for_every_block():
    preset = PRESETS["tiny"]
    model = random_unet(preset, seed=1)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 100, 999])
    with torch.no_grad():
        reference = _manual_walk(model, x, t)
        full = capture(model, x, t, list(range(1, preset.num_blocks + 1)), stop_early=False)
        for b in range(1, preset.num_blocks + 1):
            early = capture(model, x, t, [b])
            assert torch.equal(early[b], full[b]), b
            assert torch.equal(early[b], reference[b]), b


def test_early_exit_runs_no_later_block():
    preset = PRESETS["tiny"]
    model = random_unet(preset, seed=1)
    calls = []
    for b, (_, module) in unet_blocks(model).items():
        module.register_forward_hook(lambda *_, b=b: calls.append(b))
    with torch.no_grad():
        feats = capture(model, torch.zeros(1, 3, 32, 32), torch.tensor([5]), [3, 7])
    assert sorted(feats) == [3, 7]
    assert calls == list(range(1, 8))


def test_early_exit_at_b24_costs_28_5_percent_of_the_full_forward():
    model = build_unet(PRESETS["adm256-uncond"], "meta")
    x = torch.empty(1, 3, 256, 256, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as full:
        model(x, t)
    with FlopCounterMode(display=False) as early:
        capture(model, x, t, [24])
    assert abs(full.get_total_flops() / 1e9 - 2239.7) < 0.1
    assert abs(early.get_total_flops() / 1e9 - 639.3) < 0.1
    assert 0.284 < early.get_total_flops() / full.get_total_flops() < 0.286


def test_the_demo_model_is_adm256_at_one_eighth_scale_block_by_block():
    """The paper's coordinates mean the same on the demo: b=19 the middle block, b=24 =
    output_blocks[4] in the second decoder level; every block's C, H, W is adm256's / 8."""
    from extract.models.adm_blocks import block_table

    demo, adm = block_table(PRESETS["demo-fmnist"]), block_table(PRESETS["adm256-uncond"])
    assert len(demo) == len(adm) == 37
    for d, a in zip(demo, adm):
        assert (d.b, d.module, d.layers) == (a.b, a.module, a.layers)
        assert (8 * d.channels, 8 * d.height, 8 * d.width) == (a.channels, a.height, a.width), d.b
    assert demo[18].module == "middle_block" and demo[23].module == "output_blocks.4"
