"""The demo's tables (demo-table, card-demo): which runs they make, and what they skip."""

from __future__ import annotations

import pytest

from diffprobe.experiments.registry import get_experiment, run_experiment
from diffprobe.experiments.steps import command_line


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path, monkeypatch):
    """Steps are skipped when their output exists under the working folder: start from an empty
    one. Extractions show their command only (a plan reads the dataset)."""
    monkeypatch.chdir(tmp_path)
    show = lambda self, echo: echo(command_line("extract", self.argv))  # noqa: E731
    monkeypatch.setattr("diffprobe.experiments.steps.Extract.show", show)


def commands(name: str, **given: str) -> list[str]:
    spec, lines = get_experiment(name), []
    run_experiment(spec, spec.settings(given), dry=True, out=lines.append)
    return [line for line in lines if line.startswith("diffprobe ")]


def names(runs: list[str]) -> list[str]:
    return [run.split("--name ")[1].split()[0] for run in runs if "probe train" in run]


def test_the_seeded_table_extracts_each_noise_seed_on_the_same_images_and_pairs_it_with_a_head_seed():
    given = {"limit": "50", "seeds": "0,1,2", "head_seeds": "0,4,5", "bigan_weights": "none.pt"}
    runs = commands("demo-table", **given)
    extracts = [x for x in runs if "extract run" in x]
    assert len(extracts) == 3 * 3 * 2  # (best, paper point, random) x noise seeds x splits
    assert all("--limit 50" in x and "--data-seed 0" in x for x in extracts)
    assert sum("--seed 1 " in x and "_s1.zarr " in x for x in extracts) == 6
    probes = [x for x in runs if "probe train" in x]
    found = names(runs)
    # diffusion (2 rows) and random: heads x paired seeds; pixels: heads x head seeds
    assert len(found) == len(set(found)) == 3 * 2 * 3 + 2 * 3
    assert all(f"--seed {n[-1]} " in p for p, n in zip(probes, found))
    noisy = {tuple(n.rsplit("-", 2)[1:]) for n in found if not n.startswith("pixels")}
    assert noisy == {("n0", "s0"), ("n1", "s4"), ("n2", "s5")}  # noise seed k with head seed k
    for p, n in zip(probes, found):  # attention trains once, where the same run's linear grid chose
        if "-attention-" in n:
            linear = n.replace("-attention-", "-linear-")
            assert f"--features-from results/demo-table/{linear}.json" in p and "token_side=8" in p
            assert found.index(linear) < found.index(n)
        else:
            assert "--head linear" in p and "--features-from" not in p
    assert "'pixels=results/demo-table/pixels-{head}-*.json'" in runs[-1] and "BiGAN=" in runs[-1]
    assert not any("bigan" in x for x in runs[:-1])
    with pytest.raises(ValueError, match="SEEDS=0,1 HEAD_SEEDS=0,1,2: noise seed k pairs with head seed k"):
        commands("demo-table", seeds="0,1")


def test_with_bigan_weights_the_table_adds_its_stores_and_one_head_per_head_seed(tmp_path):
    (tmp_path / "bigan.pt").write_bytes(b"")
    runs = commands("demo-table", limit="50", bigan_weights=str(tmp_path / "bigan.pt"))
    features = [x for x in runs if "extract bigan-features" in x]
    # z is a 1x1 map: pools 2 and 4 are left out there
    assert len(features) == 2 and all("--skip-small-maps" in x and "_n50.zarr" in x for x in features)
    assert sorted(n for n in names(runs) if "bigan" in n) == [
        f"bigan-{h}-s{s}" for h in ("attention", "linear") for s in range(3)
    ]


def test_with_mae_weights_the_table_adds_its_timm_stores_and_one_head_per_head_seed(tmp_path):
    (tmp_path / "mae.safetensors").write_bytes(b"")
    runs = commands(
        "demo-table", limit="50", bigan_weights="none.pt", mae_weights=str(tmp_path / "mae.safetensors")
    )
    features = [x for x in runs if "extract run --model timm:" in x]
    assert len(features) == 2 and all("_n50.zarr" in x and "--model-arg patch_size=4" in x for x in features)
    assert all(" -t " not in x and "-b 1,2,3,4,5,6" in x for x in features)
    assert sorted(n for n in names(runs) if "mae" in n) == [
        f"mae-{h}-s{s}" for h in ("attention", "linear") for s in range(3)
    ]
    assert "'MAE=results/demo-table/mae-{head}-*.json'" in runs[-1]


def test_the_table_skips_what_is_made(tmp_path):
    results = tmp_path / "results" / "demo-table"
    results.mkdir(parents=True)
    (results / "pixels-linear-s1.json").write_text("{}")
    runs = commands("demo-table", bigan_weights="none.pt")
    assert "pixels-linear-s1" not in names(runs) and "pixels-attention-s1" in names(runs)


def test_the_card_names_its_stores_without_the_block_pools_it_extracts_with(tmp_path):
    runs = commands("card-demo", bigan_weights="none.pt")
    extracts = [x for x in runs if "extract run" in x]
    assert len(extracts) == 4 and all("--block-pool 31:4,8" in x and "_bp" not in x for x in extracts)
    assert names(runs) == ["card-trained", "card-random", "card-trained-20ep", "card-pixels"]
    assert not any("bigan" in x for x in runs)
    (tmp_path / "results" / "card").mkdir(parents=True)
    (tmp_path / "results" / "card" / "card-bigan.json").write_text("{}")
    (tmp_path / "bigan.pt").write_bytes(b"")
    runs = commands("card-demo", bigan_weights="bigan.pt")
    assert sum("bigan-features" in x for x in runs) == 2 and "card-bigan" not in names(runs)
    assert "--csv evidence/demo-card-bigan.members.csv" in runs[-1]
