"""The stages stand on a torch-free floor: each import runs in a fresh interpreter and we look
at what it loaded."""

import json
import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "guided_diffusion")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["extract.schema", "extract.clikit", "extract.windows", "probe.config", "probe.tables", "probe.cli", "analysis.cli",
                                    "analysis.report", "analysis.curves", "analysis.cka", "analysis.frechet", "analysis.distance",
                                    "analysis.gentable"])
def test_the_floor_and_the_light_modules_load_neither_torch_nor_guided_diffusion(module):
    modules = loaded_after(f"import {module}")
    assert not [m for m in HEAVY if m in modules], module


@pytest.mark.parametrize("module", ["probe.reader", "probe.grid", "probe.cli", "probe.run", "probe.evaluate", "analysis.compare",
                                    "analysis.fid", "analysis.features", "analysis.classifier"])
def test_probe_and_analysis_never_load_the_unet_code(module):
    modules = loaded_after(f"import {module}")
    assert "guided_diffusion" not in modules and "extract.run" not in modules and "extract.models" not in modules, module
    assert "probe.finetune" not in modules and "probe.finetune_run" not in modules, module  # the U-Net-in-the-loop stage loads on demand
    if module.startswith("analysis"):
        assert not {"probe.grid", "probe.run", "probe.heads", "probe.reader"} & modules, module  # never probe's training code


def test_probe_table_runs_without_torch(tmp_path):
    code = f"import sys\nfrom probe.cli import main\ntry:\n    main(['table', '--results', {str(tmp_path)!r}])\nexcept SystemExit:\n    pass"
    modules = loaded_after(code)
    assert not [m for m in HEAVY if m in modules]


def test_benchmarks_are_not_on_the_stages_import_paths():
    """Benchmark code loads only inside its own command (the GPU bench's settings, a plain
    dataclass, are all the extract CLI imports of it, for its option defaults)."""
    modules = loaded_after("import extract.cli, probe.cli, analysis.cli")
    bench_code = [m for m in modules if m.split(".")[0] in ("extract", "probe", "analysis") and m.split(".")[-1].startswith("bench")]
    assert bench_code == ["extract.bench_gpu_config"]


@pytest.mark.parametrize("package", ["probe", "analysis"])
def test_help_starts_quickly(package):
    """Well under a second (measured about 0.3-0.6 s here, interpreter start included)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage" in done.stdout
    assert "torch" not in loaded_after(f"import {package}.cli")
    assert time.perf_counter() - started < 15  # a loose guard only; the module check above is the real one
