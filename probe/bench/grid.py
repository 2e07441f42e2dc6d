"""`make bench-probe`: a grid of 16 linear heads against one head, on the same cache, one run.

A synthetic store (rows x dim float16, 1000 classes like ImageNet at b=24 pool 2) is
written to a temporary folder. Reported: the store read rate alone (the stream with no
training), the training rate of one head and of a 4 lr x 4 wd grid, and their ratio.

And the compute alone (bench_bank_flops): training steps of the 16-head grid's LinearBank on
in-memory float32 tensors (the dtype train_grid trains in: no autocast), as GFLOP/s of its
two GEMMs (bank_gemms), beside torch.matmul doing the same two GEMMs on the same shapes and a
large square matmul (the plain peak). The step's time is split into forward + backward (the
GEMMs, the cross-entropy, the bias gradient) and the optimizer step, and the cross-entropy
alone is timed, so that what the step pays beyond the GEMMs is in the results.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from extract.store.schema import FeatureKey, FeatureStore
from probe.grid import Grid, MemberSpec, TrainSettings, build_member, feature_set, train_grid
from probe.reader import FeatureReader, fit_standardizers, stream_batches

KEY = FeatureKey(150, 24, 2)

# the demo's scale (Fashion-MNIST, 10 classes, a 256-channel pool-2 map) and ImageNet's
# (b=24 pool 2: 4096 features, 1000 classes)
BENCH_SHAPES = {
    "demo": dict(rows=20000, dim=1024, classes=10, epochs=10),
    "imagenet": dict(rows=8192, dim=4096, classes=1000, epochs=1),
}


def synthetic_store(path: Path, rows: int, dim: int, classes: int, seed: int = 0) -> FeatureStore:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=rows)
    store = FeatureStore.create(
        path,
        row_shapes={KEY: (dim // 4, 2, 2)},
        ids=[str(i) for i in range(rows)],
        labels=labels,
        index=np.arange(rows),
        shard_rows=2048,
        views=1,
        dtype="float16",
        attrs={
            "key": {"model": {"name": "bench"}},
            "provenance": {"dataset": {"classes": [str(c) for c in range(classes)]}},
        },
    )
    for s in range(store.n_shards):
        span = store.shard_rows(s)
        x = rng.standard_normal((len(span), dim // 4, 2, 2), dtype=np.float32).astype(np.float16)
        store.write_shard(s, {KEY: x}, np.ones(len(span), bool))
    store.finish({})
    return store


GRID_LRS, GRID_WDS = (1e-4, 3e-4, 1e-3, 3e-3), (0.0, 1e-5, 1e-4, 1e-3)  # the 16-head grid


def bank_gemms(batch: int, dim: int, members: int, classes: int) -> list[dict]:
    """The GEMMs of one training step of a LinearBank of `members` heads: (m, n, k) and 2mnk
    FLOPs each. The members are one (M*K, D) weight, so the forward is one product and the
    weight gradient one more; there is no input gradient (the features are data, not
    parameters). Not GEMMs, not counted: the bias add and the bias gradient (a sum over the
    batch), the cross-entropy and the optimizer step."""
    mk = members * classes
    shapes = (
        ("forward: logits = x @ W^T", batch, mk, dim),
        ("backward: grad W = dlogits^T @ x", mk, dim, batch),
    )
    return [{"name": name, "m": m, "n": n, "k": k, "flops": 2 * m * n * k} for name, m, n, k in shapes]


def best_seconds(
    fns: dict[str, Callable[[], object]], budget_s: float = 3.0, most: int = 200, warmup: int = 2
) -> tuple[dict[str, float], int]:
    """The fastest call of each function, timed in turns (one call of each per round, so that a
    noisy spell hits them alike), after `warmup` rounds; rounds: about budget_s worth, at least
    3 and at most `most` (warmup >= 1: the warm rounds set the count). Returns ({name: seconds}, rounds)."""
    if warmup < 1:
        raise ValueError("best_seconds: warmup must be at least 1")
    best = {name: float("inf") for name in fns}
    rounds, started = most, time.perf_counter()
    r = -warmup
    while r < rounds:
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r >= 0:
                best[name] = min(best[name], time.perf_counter() - t)
        if r == -1:  # the last warm round sets how many to time
            rounds = int(min(most, max(3, budget_s * warmup / max(time.perf_counter() - started, 1e-9))))
        r += 1
    return best, rounds


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def bench_bank_flops(
    dim: int,
    classes: int,
    batch: int = 256,
    members: int = 16,
    optimizer: str = "adamw",
    budget_s: float = 10.0,
    most: int = 200,
    peak_n: int = 2048,
    seed: int = 0,
) -> dict:
    """Training steps of a grid of `members` linear heads (one LinearBank) on in-memory float32
    tensors, through the Grid calls train_grid makes (forward, zero_grad_all, backward,
    step_all), as achieved GFLOP/s of bank_gemms; beside torch.matmul doing those GEMMs (same
    shapes, same layout: x @ W^T with W the (M*K, D) weight, then dlogits^T @ x) and one
    peak_n^3 square matmul. Each time is the best of repeated calls after a warmup
    (best_seconds: the step, its parts and the matmuls in turns)."""
    if members > len(GRID_LRS) * len(GRID_WDS):
        raise ValueError(f"bench_bank_flops: at most {len(GRID_LRS) * len(GRID_WDS)} members")
    gen = torch.Generator().manual_seed(seed)
    fs = feature_set((KEY,), {KEY: (dim, 1, 1)})
    specs = [MemberSpec("linear", (), fs, lr, wd) for lr in GRID_LRS for wd in GRID_WDS][:members]
    grid = Grid(
        specs,
        [fs],
        [build_member(s, classes, seed) for s in specs],
        TrainSettings(batch_size=batch, optimizer=optimizer),
    )
    assert len(grid.banks) == 1 and not grid.singles, "the grid should be one LinearBank"
    bank = grid.banks[0]
    x = torch.randn(batch, *fs.in_shape, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    grid.train()

    def step():
        loss = grid([x], y)
        grid.zero_grad_all()
        loss.backward()
        grid.step_all(1.0)

    def forward_backward():
        loss = grid([x], y)
        grid.zero_grad_all()
        loss.backward()

    logits = torch.randn(batch * members, classes, generator=gen, requires_grad=True)
    targets = y.repeat_interleave(members)

    def cross_entropy():  # what bank.loss adds to the GEMMs: the loss over (batch x M, K) logits
        nn.functional.cross_entropy(logits, targets, reduction="sum").backward()
        logits.grad = None

    w = bank.weight.detach().reshape(members * classes, dim)  # the bank's weight, as its forward sees it
    xf, dlogits = x.flatten(1), torch.randn(batch, members * classes, generator=gen)

    def matmul():
        torch.matmul(xf, w.t())
        torch.matmul(dlogits.t(), xf)

    # for scale: PyTorch's fused (single-pass) optimizer on copies of the bank's two tensors and
    # gradients, one lr and wd for all heads (the grid's has a parameter group per head): what
    # any training with this optimizer pays
    forward_backward()
    copies = [nn.Parameter(q.detach().clone()) for q in (bank.weight, bank.bias)]
    for c, q in zip(copies, (bank.weight, bank.bias)):
        c.grad = q.grad.clone()
    extra = {"momentum": 0.9} if optimizer == "sgd" else {}
    fused = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer](
        copies, lr=1e-3, weight_decay=1e-4, fused=True, **extra
    )

    # every step leaves the bank's gradient in place, which `optimizer` (the step alone) reuses
    fns = {
        "step": step,
        "forward_backward": forward_backward,
        "optimizer": lambda: grid.step_all(1.0),
        "torch_fused_optimizer": fused.step,
        "cross_entropy": cross_entropy,
        "matmul": matmul,
    }
    seconds, repeats = best_seconds(fns, budget_s, most)
    del fused, copies
    a, b = torch.randn(peak_n, peak_n, generator=gen), torch.randn(peak_n, peak_n, generator=gen)
    peak_s = best_seconds({"peak": lambda: torch.matmul(a, b)}, budget_s / 3, most)[0]["peak"]
    gemms = bank_gemms(batch, dim, members, classes)
    flops = sum(g["flops"] for g in gemms)
    bank_rate, matmul_rate = flops / seconds["step"] / 1e9, flops / seconds["matmul"] / 1e9
    return {
        "batch": batch,
        "dim": dim,
        "members": members,
        "classes": classes,
        "dtype": "float32",
        "optimizer": optimizer,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "gemms": gemms,
        "flops_per_step": flops,
        "seconds": {k: _sig(v) for k, v in seconds.items()},
        "bank_gflops": _sig(bank_rate),
        "matmul_gflops": _sig(matmul_rate),
        "bank_over_matmul": _sig(bank_rate / matmul_rate),
        "peak_n": peak_n,
        "peak_gflops": _sig(2 * peak_n**3 / peak_s / 1e9),
    }


def bench_probe(
    rows: int = 20000,
    dim: int = 4096,
    classes: int = 1000,
    epochs: int = 2,
    batch: int = 256,
    store: bool = True,
) -> dict:
    """The store-read and training rates (store=False: skipped), and bench_bank_flops under "flops"."""
    flops = bench_bank_flops(dim, classes, batch=batch)
    if not store:
        return {
            "rows": rows,
            "dim": dim,
            "classes": classes,
            "batch": batch,
            "threads": torch.get_num_threads(),
            "flops": flops,
        }
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "bench.zarr", rows, dim, classes)
        reader = FeatureReader(store, (KEY,))
        labels, mask = store.labels(), np.ones(rows, bool)
        norms = fit_standardizers(reader, mask)
        window = max(batch, (512 << 20) // reader.row_bytes())

        def epochs_fn(e: int):
            return stream_batches(reader, mask, labels, batch=batch, window_rows=window, seed=0, epoch=e)

        started = time.perf_counter()
        read = sum(len(y) for e in range(epochs) for _, y in epochs_fn(e))
        read_rate = read / (time.perf_counter() - started)
        fs = feature_set((KEY,), {KEY: reader.row_shape(KEY)})
        settings = TrainSettings(epochs=epochs, batch_size=batch)
        runs = {}
        for label, lrs, wds in (("1 head", (1e-3,), (0.0,)), ("16 heads", GRID_LRS, GRID_WDS)):
            specs = [MemberSpec("linear", (), fs, lr, wd) for lr in lrs for wd in wds]
            grid = Grid(specs, [fs], [build_member(s, classes, 0) for s in specs], settings)
            runs[label] = train_grid(grid, epochs_fn, rows // batch, norms, "cpu", progress=True)
        return {
            "rows": rows,
            "dim": dim,
            "classes": classes,
            "epochs": epochs,
            "batch": batch,
            "threads": torch.get_num_threads(),
            "store_mb": round(store.size_bytes() / 1e6, 1),
            "read_samples_per_s": round(read_rate, 1),
            "train": {
                k: {"seconds": round(v["seconds"], 2), "samples_per_s": round(v["samples_per_s"], 1)}
                for k, v in runs.items()
            },
            "grid16_over_one": round(runs["16 heads"]["seconds"] / runs["1 head"]["seconds"], 3),
            "flops": flops,
        }


def format_flops(f: dict) -> str:
    s = f["seconds"]

    def ms(k: str) -> str:
        return f"{s[k] * 1e3:.1f} ms"

    gemm = " + ".join(f"{g['m']}x{g['n']}x{g['k']}" for g in f["gemms"])
    return "\n".join(
        [
            f"  compute alone: {f['members']}-head bank, {f['dtype']}, batch {f['batch']}, {f['optimizer']}, "
            f"GEMMs (m x n x k) {gemm} = {f['flops_per_step'] / 1e9:.3g} GFLOP/step, best of {f['repeats']}",
            f"  bank training step         {f['bank_gflops']:>10.1f} GFLOP/s  ({ms('step')}: "
            f"forward+backward {ms('forward_backward')}, optimizer {ms('optimizer')}; "
            f"cross-entropy alone {ms('cross_entropy')}, "
            f"torch's fused {f['optimizer']} {ms('torch_fused_optimizer')})",
            f"  torch.matmul, same GEMMs   {f['matmul_gflops']:>10.1f} GFLOP/s  ({ms('matmul')})",
            f"  bank / matmul              {f['bank_over_matmul']:>10.2f}",
            f"  peak ({f['peak_n']}^3 matmul)      {f['peak_gflops']:>10.1f} GFLOP/s",
        ]
    )


def format_table(r: dict) -> str:
    if "train" not in r:  # store=False: the compute alone
        return (
            f"probe bench: {r['dim']} features, {r['classes']} classes, {r['threads']} threads\n"
            + format_flops(r["flops"])
        )
    lines = [
        f"probe bench: {r['rows']} rows x {r['dim']} features (fp16, {r['store_mb']} MB), "
        f"{r['classes']} classes, {r['epochs']} epochs, batch {r['batch']}, {r['threads']} threads",
        f"  store read (stream only)   {r['read_samples_per_s']:>10.0f} samples/s",
    ]
    for label, v in r["train"].items():
        lines.append(f"  train {label:<20} {v['samples_per_s']:>10.0f} samples/s  ({v['seconds']:.1f} s)")
    lines.append(f"  16-head grid / one head    {r['grid16_over_one']:>10.2f}x time (16 separate runs: 16x)")
    if "flops" in r:
        lines.append(format_flops(r["flops"]))
    return "\n".join(lines)
