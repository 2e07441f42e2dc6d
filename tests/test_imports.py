"""The stages stand on a torch-free floor: each import runs in a fresh interpreter and we look
at what it loaded."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

# every test looks at a fresh interpreter
pytestmark = pytest.mark.slow
HEAVY = ("torch", "guided_diffusion")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    [
        "extract.store.schema",
        "extract.store.cli_options",
        "extract.store.window_order",
        "probe.config",
        "probe.tables",
        "probe.cli",
        "analysis.cli",
        "analysis.report",
        "analysis.curves",
        "analysis.cka",
        "analysis.frechet",
        "analysis.distance",
        "analysis.gentable",
    ],
)
def test_the_floor_and_the_light_modules_load_neither_torch_nor_guided_diffusion(module):
    modules = loaded_after(f"import {module}")
    assert not [m for m in HEAVY if m in modules], module


@pytest.mark.parametrize(
    "module",
    [
        "probe.reader",
        "probe.grid",
        "probe.cli",
        "probe.run",
        "probe.evaluate",
        "analysis.compare",
        "analysis.fid",
        "analysis.distance",
    ],
)
def test_probe_and_analysis_never_load_the_unet_code(module):
    modules = loaded_after(f"import {module}")
    assert (
        "guided_diffusion" not in modules
        and "extract.run" not in modules
        and "extract.models.adm" not in modules
    ), module
    # the U-Net-in-the-loop stage loads on demand
    assert "probe.finetune.model" not in modules and "probe.finetune.run" not in modules, module
    if module.startswith("analysis"):
        # never probe's training code
        assert not {"probe.grid", "probe.run", "probe.heads", "probe.reader"} & modules, module


def test_probe_table_runs_without_torch(tmp_path):
    code = (
        "import sys\nfrom probe.cli import main\n"
        f"try:\n    main(['table', '--results', {str(tmp_path)!r}])\nexcept SystemExit:\n    pass"
    )
    modules = loaded_after(code)
    assert not [m for m in HEAVY if m in modules]


def test_benchmarks_are_not_on_the_stages_import_paths():
    """Benchmark code loads only inside its own command (the GPU bench's settings, a plain
    dataclass, are all the extract CLI imports of it, for its option defaults)."""
    modules = loaded_after("import extract.cli, probe.cli, analysis.cli")
    ours = [m for m in modules if m.split(".")[0] in ("extract", "probe", "analysis")]
    bench_code = [m for m in ours if "bench" in m.split(".") or m.split(".")[-1].startswith("bench")]
    # the package's docstring and the settings
    assert sorted(bench_code) == ["extract.bench", "extract.bench.gpu_config"]


@pytest.mark.parametrize("package", ["probe", "analysis"])
def test_help_starts_quickly(package):
    """Well under a second (measured about 0.3-0.6 s here, interpreter start included)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage" in done.stdout
    assert "torch" not in loaded_after(f"import {package}.cli")
    assert time.perf_counter() - started < 15  # a loose guard only; the module check above is the real one


STAGE_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
from extract.store.schema import FeatureKey
from tests.probe.stores import blobs, make_store
tmp = Path(sys.argv[1])
x, y, centres = blobs(96, 4, 8, seed=0, shape=(8, 1, 1))
xt, yt, _ = blobs(48, 4, 8, seed=1, shape=(8, 1, 1), centres=centres)
key = FeatureKey(10, 3, 1)
make_store(tmp / "train.zarr", {key: x}, y, shard_rows=32)
make_store(tmp / "test.zarr", {key: xt}, yt, shard_rows=16, split="test")
rng = np.random.default_rng(0)
np.savez(tmp / "real.npz", arr_0=rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8))
np.savez(tmp / "fake.npz", arr_0=rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8))
from probe.cli import main as probe
from analysis.cli import main as analysis
calls = [
    (probe, ["train", "--train", f"{tmp}/train.zarr", "--test", f"{tmp}/test.zarr", "--epochs", "1",
             "--batch-size", "16", "--lr", "1e-2", "--wd", "0",
             "--results", f"{tmp}/r", "--name", "x", "--no-progress"]),
    (probe, ["eval", "--head", f"{tmp}/r/x.head.pt", "--store", f"{tmp}/test.zarr"]),
    (probe, ["table", "--results", f"{tmp}/r"]),
    (analysis, ["cka", "--store", f"{tmp}/test.zarr", "--out", f"{tmp}/c/cka.png",
                "--no-progress"]),
    (analysis, ["fd", "--real", f"{tmp}/train.zarr", "--fake", f"{tmp}/test.zarr",
                "--out", f"{tmp}/fd.json"]),
    (analysis, ["fid", "--real", f"{tmp}/real.npz", "--fake", f"{tmp}/fake.npz",
                "--features", "classifier:extract/weights/fmnist-classifier.pt",
                "--pr-rows", "20", "--cache", f"{tmp}/fidcache", "--out", f"{tmp}/fid.json",
                "--no-progress"]),
    (analysis, ["gen-table", "--fd", f"a={tmp}/fid.json", "--out", f"{tmp}/gen.json"]),
    (analysis, ["report", "--results", f"{tmp}/r", "--cka", f"{tmp}/c", "--out", f"{tmp}/report"]),
]
codes = []
for main, argv in calls:
    try:
        main(argv)
        codes.append(0)
    except SystemExit as done:
        codes.append(done.code or 0)
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def test_every_probe_and_analysis_command_reads_stores_without_loading_a_diffusion_model(tmp_path):
    """train, eval, table, cka, fd, fid, gen-table and report, one after another in one fresh
    interpreter: no U-Net, no diffusers and none of extract's model modules are loaded."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", STAGE_SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0] * 8, (result["codes"], done.stdout[-3000:], done.stderr[-3000:])
    loaded = set(result["modules"])
    assert not {"guided_diffusion", "diffusers"} & loaded
    model_code = {
        m
        for m in loaded
        if m.startswith("extract.models") and m not in ("extract.models", "extract.models.weights")
    }
    assert not model_code, sorted(model_code)


def test_a_pixel_store_loads_no_diffusion_model(tmp_path, fmnist_env):
    """Raw pixels need a dataset reader and the writer: no U-Net code, no diffusers."""
    code = (
        "from extract.cli import main\ntry:\n"
        "    main(['pixels', '--data', 'fashion-mnist', '--split', 'test', '--limit', '8', "
        f"'--out', {str(tmp_path / 'p.zarr')!r}, '--no-progress'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code"
    )
    modules = loaded_after(code)
    assert (tmp_path / "p.zarr").is_dir()
    assert not {"guided_diffusion", "diffusers"} & modules
    # torch-free preset tables
    assert not {
        m
        for m in modules
        if m.startswith("extract.models.")
        and m
        not in (
            "extract.models.pixels",
            "extract.models.adm_presets",
            "extract.models.latent_presets",
            "extract.models.diffusers_spec",
            "extract.models.adm_flags",
        )
    }
