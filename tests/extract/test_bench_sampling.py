"""The batching comparison behind the README's determinism statement."""


def test_samples_do_not_depend_on_batching():
    from extract.bench_sampling import compare_batchings

    r = compare_batchings(images=2, steps=2)
    for sampler in ("ddpm", "ddim"):
        assert r[sampler]["pixels"] == 2 * 32 * 32
        assert r[sampler]["equal_whole_vs_halves"] and r[sampler]["max_grey_levels_whole_vs_singles"] <= 1
    assert 0 <= r["unet_float_max_abs_whole_vs_singles"] < 1e-4
