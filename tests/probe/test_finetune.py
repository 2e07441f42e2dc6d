"""End-to-end fine-tuning: what a step changes, resume after kill -9, two processes against one,
the exported U-Net against a cache, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.models.adm_blocks import unet_blocks
from extract.models.adm_presets import get_preset

ROOT = Path(__file__).resolve().parents[2]
BASE = dict(
    model="tiny",
    random_init=True,
    limit=48,
    test_limit=16,
    t=50,
    block=4,
    pool=2,
    epochs=2,
    batch_size=8,
    progress=False,
)


def config(tmp_path, **kw):
    from probe.finetune.model import FinetuneConfig

    return FinetuneConfig(out=tmp_path / "run", results=tmp_path / "results", **{**BASE, **kw})


def one_step(freeze_blocks=0, trainable="all", grad_checkpoint=False, block=4):
    """A tiny U-Net + linear head after one SGD step: (parameters before, after, model, names that train)."""
    from extract.models.adm import random_unet
    from probe.finetune.model import PrefixClassifier, trainable_parameters, use_grad_checkpointing

    torch.manual_seed(0)
    unet = random_unet(get_preset("tiny"), 0)
    named = trainable_parameters(unet, block, freeze_blocks, trainable)
    if grad_checkpoint:
        use_grad_checkpointing(unet, block)
    probe = PrefixClassifier(unet, torch.nn.Identity(), 50, block, 2)
    shape = probe.features(torch.zeros(1, 3, 32, 32)).shape[1:]
    net = PrefixClassifier(
        unet, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), 3)), 50, block, 2
    )
    before = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.SGD([p for _, p in named] + list(net.head.parameters()), lr=0.1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}
    opt.step()
    return (
        before,
        {k: v.detach().clone() for k, v in unet.state_dict().items()},
        unet,
        {n for n, _ in named},
        grads,
    )


def block_of(unet, name):
    for b, (prefix, _) in unet_blocks(unet).items():
        if name.startswith(prefix + "."):
            return b
    return None


def test_a_step_changes_the_prefix_only_and_nothing_after_b_runs():
    before, after, unet, names, _ = one_step(freeze_blocks=2)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= names
    for k in before:
        b = block_of(unet, k)
        if b is not None and (b <= 2 or b > 4):
            assert torch.equal(before[k], after[k]), k  # frozen blocks and blocks after b: bit-identical
    assert any(block_of(unet, k) in (3, 4) for k in changed) and any(
        k.startswith("time_embed") for k in changed
    )
    calls = []
    later = unet_blocks(unet)[5][1]
    handle = later.register_forward_hook(lambda *a: calls.append(1))
    from probe.finetune.model import PrefixClassifier

    PrefixClassifier(unet, torch.nn.Identity(), 50, 4, 2)(torch.zeros(1, 3, 32, 32))
    handle.remove()
    assert calls == []  # block 5 never runs


def test_norms_and_biases_only_train_norms_and_biases():
    before, after, unet, names, _ = one_step(trainable="norms-biases")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    modules = dict(unet.named_modules())
    assert changed and all(
        k.endswith("bias") or isinstance(modules[k.rsplit(".", 1)[0]], torch.nn.GroupNorm) for k in changed
    )
    assert any(k.endswith("weight") for k in changed)  # GroupNorm scales train too


def test_gradient_checkpointing_gives_the_same_gradients():
    _, _, _, _, plain = one_step()
    _, _, _, _, ckpt = one_step(grad_checkpoint=True)
    assert plain.keys() == ckpt.keys() and plain
    for k in plain:
        torch.testing.assert_close(plain[k], ckpt[k], rtol=1e-5, atol=1e-6)


def test_run_writes_probe_results_and_an_exported_unet_that_extracts_its_features(fmnist_env, tmp_path):
    from extract.data.registry import open_dataset
    from extract.data.sources import subset_indices
    from extract.models.adm import load_checkpoint
    from extract.run import extract
    from extract.store.config import ExtractConfig, from_flat
    from extract.store.schema import FeatureKey, open_complete
    from probe.finetune.model import EVAL_VIEW, PrefixClassifier, images, noised
    from probe.finetune.run import finetune
    from probe.tables import read_results

    result = finetune(config(tmp_path))
    saved = read_results(tmp_path / "results" / f"{result['name']}.json")
    assert (
        saved["kind"] == "finetune" and saved["members"][0]["finetuned"] and 0 <= saved["test"]["top1"] <= 100
    )
    assert saved["head"]["epoch"] in (1, 2) and saved["val"]["rows"] > 0
    assert saved["test"]["top5"] > saved["test"]["top1"]  # 10 classes: top-5 is really the top 5
    exported = Path(result["exported"])
    extract(
        from_flat(
            ExtractConfig,
            out=tmp_path / "s.zarr",
            model="tiny",
            ckpt=exported,
            split="test",
            ts=(50,),
            blocks=(4,),
            pools=(2,),
            limit=16,
            seed=0,
            progress=False,
        )
    )
    store = open_complete(tmp_path / "s.zarr")
    cached = store.array(FeatureKey(50, 4, 2))[:]
    preset = get_preset("tiny")
    unet = load_checkpoint(preset, exported)
    source = open_dataset("fashion-mnist", None, "test")
    rows = subset_indices(len(source), 16, 0)
    with torch.no_grad():
        x = noised(preset, images(source, rows, preset, seed=0, epoch=None), rows, 50, 0, EVAL_VIEW)
        direct = PrefixClassifier(unet, torch.nn.Identity(), 50, 4, 2).features(x).numpy()
    np.testing.assert_allclose(
        cached.astype(np.float32), direct, rtol=2e-3, atol=2e-3
    )  # the store keeps float16


def _script(tmp_path, **kw) -> str:
    args = {**BASE, **kw}
    return (
        "import sys\nfrom pathlib import Path\n"
        "from probe.finetune.model import FinetuneConfig\nfrom probe.finetune.run import finetune\n"
        f"finetune(FinetuneConfig(out=Path({str(tmp_path / 'run')!r}), "
        f"results=Path({str(tmp_path / 'results')!r}), **{args!r}))\n"
    )


@pytest.mark.slow
def test_resume_after_kill_equals_an_uninterrupted_run(fmnist_env, tmp_path):
    from probe.finetune.run import finetune

    # the killed run is a child with one thread; the runs here use one too, so kernels round alike
    # (with two threads here the bytes differ whichever test ran before)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_matches(finetune, fmnist_env, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _resume_matches(finetune, fmnist_env, tmp_path):
    whole = finetune(config(tmp_path / "a", epochs=3, checkpoint_every=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASHION_MNIST_DIR": str(fmnist_env)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(tmp_path / "b", epochs=3, checkpoint_every=1)], cwd=ROOT, env=env
    )
    state = tmp_path / "b" / "run" / "finetune_state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and torch.load(state, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 0 < killed_at < 3 * 5
    resumed = finetune(config(tmp_path / "b", epochs=3, checkpoint_every=1))
    a, b = (
        torch.load(whole["exported"], weights_only=True),
        torch.load(resumed["exported"], weights_only=True),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole["test"]["top1"] == resumed["test"]["top1"]


@pytest.mark.slow
def test_two_processes_equal_one_on_the_same_global_batch(fmnist_env, tmp_path):
    from probe.finetune.run import finetune

    one = finetune(config(tmp_path / "one"))
    script = tmp_path / "two.py"
    script.write_text(_script(tmp_path / "two"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASHION_MNIST_DIR": str(fmnist_env)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(one["exported"], weights_only=True)
    b = torch.load(tmp_path / "two" / "run" / "finetuned.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert json.loads(next((tmp_path / "two" / "results").glob("*.json")).read_text())["test"]["rows"] == 16


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--block", "99"], "outside 1..13"),
        (["--random-init", "--ckpt", "x.pt"], "exclude each other"),
        (["--limit", "10", "--batch-size", "64"], "make no full batch of 64"),
        (["--ema-rate", "1.5"], "--ema-rate must be in [0, 1)"),
        (["--pool", "zero"], "pool must be a positive integer"),
    ],
)
def test_bad_input_is_one_line(fmnist_env, tmp_path, args, message):
    args = [a.replace("--block", "-b") for a in args]
    base = [
        "finetune",
        "--out",
        str(tmp_path / "r"),
        "--model",
        "tiny",
        "--results",
        str(tmp_path / "res"),
        "--no-progress",
        "--epochs",
        "1",
    ]
    if "--random-init" not in args and "--ckpt" not in args:
        base.append("--random-init")
    if "--limit" not in args:
        base += ["--limit", "32", "--batch-size", "8"]
    done = subprocess.run(
        [sys.executable, "-m", "probe", *base, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "FASHION_MNIST_DIR": str(fmnist_env)},
    )
    assert done.returncode != 0 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, (
        done.stderr
    )


@pytest.mark.slow  # trains or runs a whole experiment (over 9 s)
def test_the_diffssl_recipe_updates_fp16_convolutions_in_place_on_all_of_train(
    fmnist_env, tmp_path, monkeypatch
):
    """diffssl's finetune mode as its code runs: convert_to_fp16's convolutions stay fp16 and move
    under plain SGD, nothing is carved for validation, the last epoch is reported, and a run
    stopped mid-way resumes to the same weights."""
    import probe.finetune.run as ftrun
    from extract.models.adm import random_unet
    from extract.models.adm_presets import get_preset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = ftrun.finetune(config(tmp_path / "a", recipe="diffssl", epochs=1, checkpoint_every=1))
        real, calls = ftrun.images, []

        def stops_at_the_fourth_batch(*args, **kwargs):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt("stopped")
            return real(*args, **kwargs)

        monkeypatch.setattr(ftrun, "images", stops_at_the_fourth_batch)
        with pytest.raises(KeyboardInterrupt):
            ftrun.finetune(config(tmp_path / "b", recipe="diffssl", epochs=1, checkpoint_every=1))
        monkeypatch.setattr(ftrun, "images", real)
        assert torch.load(tmp_path / "b" / "run" / "finetune_state.pt", weights_only=True)["step"] == 3
        resumed = ftrun.finetune(config(tmp_path / "b", recipe="diffssl", epochs=1, checkpoint_every=1))
    finally:
        torch.set_num_threads(threads)
    assert (
        whole["val"]["top1"] is None and whole["val"]["rows"] == 0 and whole["stores"]["train"]["rows"] == 48
    )
    assert (
        whole["head"]["epoch"] == 1
        and whole["config"]["fp16_weights"] is True
        and whole["config"]["aug"] == "gd-crop-flip"
    )
    exported = torch.load(whole["exported"], weights_only=True)
    convs = [
        k
        for k in exported
        if k.startswith(("input_blocks", "middle_block")) and k.endswith(".weight") and exported[k].dim() == 4
    ]
    assert convs and all(
        exported[k].dtype == torch.float16 for k in convs
    )  # the weights SGD updated are the fp16 ones
    start = random_unet(get_preset("tiny"), seed=0).state_dict()
    assert any(not torch.equal(exported[k], start[k].half()) for k in convs)
    again = torch.load(resumed["exported"], weights_only=True)
    assert (
        all(torch.equal(exported[k], again[k]) for k in exported)
        and whole["test"]["top1"] == resumed["test"]["top1"]
    )


@pytest.mark.parametrize("recipe", ["paper", "diffprobe"])
def test_other_recipes_keep_fp32_weights(recipe):
    from probe.finetune.model import FT_RECIPES

    assert FT_RECIPES[recipe].fp16_weights is False and FT_RECIPES["diffssl"].fp16_weights is True


@pytest.mark.slow  # trains or runs a whole experiment (over 9 s)
def test_the_test_split_is_scored_along_the_way_and_only_reported(fmnist_env, tmp_path):
    """diffssl's eval_interval: the recipe scores the test split every 7 epochs; the scores are
    reported beside the result (the last one is the reported test top-1) and pick nothing. Every
    run keeps its per-epoch history (train loss, lr, validation top-1 where there is one)."""
    import probe.finetune.run as ftrun
    from probe.finetune.model import FT_RECIPES

    assert FT_RECIPES["diffssl"].eval_every == 7 and FT_RECIPES["paper"].eval_every == 0
    assert config(tmp_path, recipe="diffssl").resolved()["eval_every"] == 7
    result = ftrun.finetune(config(tmp_path / "a", recipe="diffssl", epochs=2, eval_every=1))
    along = result["test_along_the_way"]
    assert along["every_epochs"] == 1 and [e for e, _ in along["top1"]] == [1, 2]
    assert along["top1"][-1][1] == result["test"]["top1"] and result["head"]["epoch"] == 2
    assert [h["epoch"] for h in result["history"]] == [1, 2] and all(
        h["val_top1"] is None and h["train_loss"] > 0 for h in result["history"]
    )
    log = Path(result["log_file"]).read_text()
    assert (
        "finetune epoch 1/2: train loss" in log
        and "finetune epoch 2/2" in log
        and "result: test top-1" in log
    )
    paper = ftrun.finetune(config(tmp_path / "b", recipe="paper", epochs=1))
    assert paper["test_along_the_way"]["top1"] == []
    assert paper["history"][0]["val_top1"] == paper["val"]["top1"] and paper["history"][0][
        "lr"
    ] == pytest.approx(1e-3)


def test_the_test_predictions_pair_a_fine_tuned_run_with_frozen_heads(fmnist_env, tmp_path):
    """NAME.predictions.npz beside the results: the test rows' dataset positions, labels and top-1,
    so `analysis diff` compares a fine-tuned run with a frozen probe on the same test rows."""
    from analysis.intervals import compare, load_run
    from extract.data.registry import open_dataset
    from extract.data.sources import subset_indices
    from extract.run import extract
    from extract.store.config import ExtractConfig, from_flat
    from probe.finetune.run import finetune
    from probe.grid import TrainSettings
    from probe.run import ProbeConfig, probe

    result = finetune(config(tmp_path))
    run = load_run(tmp_path / "results" / f"{result['name']}.json")
    rows = subset_indices(len(open_dataset("fashion-mnist", None, "test")), 16, 0)
    assert np.array_equal(run.index, np.sort(rows)) and len(run.pred) == 16
    assert 100.0 * run.correct.mean() == pytest.approx(result["test"]["top1"])
    for split, limit in (("train", 48), ("test", 16)):
        extract(
            from_flat(
                ExtractConfig,
                out=tmp_path / f"{split}.zarr",
                model="tiny",
                random_init=True,
                split=split,
                ts=(50,),
                blocks=(4,),
                pools=(2,),
                limit=limit,
                seed=0,
                progress=False,
            )
        )
    probe(
        ProbeConfig(
            train=tmp_path / "train.zarr",
            test=tmp_path / "test.zarr",
            results=tmp_path / "results",
            progress=False,
            name="frozen",
            training=TrainSettings(epochs=1, batch_size=8),
        )
    )
    d = compare(
        [tmp_path / "results" / f"{result['name']}.json"],
        [tmp_path / "results" / "frozen.json"],
        resamples=100,
    )
    assert d.rows == 16 and d.a_runs == [pytest.approx(result["test"]["top1"])]
