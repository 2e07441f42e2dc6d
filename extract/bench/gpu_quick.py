"""Quick GPU check (`python -m extract bench-gpu --quick`): under 4 minutes on one GPU.

Three parts, each of which stops with one line if it fails, never losing the others:

a. extraction: early-exit images/s of the paper's model (adm256-uncond, random weights,
   b=24) at one batch (64), bf16 and fp16 autocast, with and without channels_last, no
   torch.compile (the grid of `extract.bench.gpu`, cut down);
b. store read: a synthetic fp16 feature store (FeatureStore.create, 20,000 rows of
   (1024, 2, 2)) read shard by shard through `store.array(key)[a:b]`, against np.load of the
   same bytes, on this machine's host (warm page cache: the cost of decoding, not the disk);
c. bit identity: a small preset (demo-fmnist, random weights) extracted twice on the device
   from the same generated images with `extract.run.extract`, at two loader batch sizes
   (the same micro-batch: "any batch size gives the same bits"), per autocast dtype; the
   feature arrays compared bit for bit, with the max abs difference.

The JPEG loader part of the full bench runs only when loader_images is given (quick: 0).
A time budget (cfg.time_budget_s) skips the parts and cases not begun once it is spent.
On the CPU with the tiny preset and tiny sizes every code path runs (a check, not speed).
See extract/bench/gpu_config.py for the time estimate on an H200.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from extract.bench.gpu import SKIPPED, _first_line, bench_gpu, flops_per_image, machine_info, peak_tflops
from extract.bench.gpu_config import GpuBenchConfig
from extract.bench.gpu_loader import bench_loader, write_jpegs
from extract.bench.gpu_setup import validate
from extract.bench.io import best_time
from extract.models.adm_presets import get_preset
from extract.models.precision import AUTOCAST_DTYPES
from extract.store.schema import FeatureKey, FeatureStore

STORE_KEY = FeatureKey(150, 24, 2)
IDENTITY_IMAGE_SIZE = (64, 48)  # width, height of the generated JPEGs (resized to the preset's size)


def validate_quick(cfg: GpuBenchConfig):
    """The grid's checks and those of the store and identity parts: (preset, device)."""
    preset, device = validate(cfg)
    get_preset(cfg.identity_model)  # an ADM preset; an unknown name lists them
    unknown = [d for d in cfg.identity_dtypes if d not in AUTOCAST_DTYPES]
    if unknown:
        raise ValueError(f"unknown identity dtype {unknown[0]!r}; choose from {', '.join(AUTOCAST_DTYPES)}")
    if cfg.io_rows < 1 or cfg.io_shard_rows < 1 or cfg.io_repeats < 1:
        raise ValueError("io_rows, io_shard_rows and io_repeats must be at least 1")
    if cfg.io_dim < 4 or cfg.io_dim % 4:
        raise ValueError(f"io_dim must be a multiple of 4 (rows are (io_dim // 4, 2, 2)), got {cfg.io_dim}")
    if cfg.identity_images < 0 or cfg.time_budget_s <= 0:
        raise ValueError("identity_images must be at least 0 and time_budget_s positive")
    return preset, device


# ---------------------------------------------------------------- b. the store's read rate
def bench_store_read(
    rows: int = 20000,
    dim: int = 4096,
    shard_rows: int = 2048,
    repeats: int = 3,
    seed: int = 0,
    root: Path | None = None,
) -> dict:
    """Write `rows` fp16 rows of (dim // 4, 2, 2) into a FeatureStore and, the same bytes, into
    a .npy; read the store shard by shard (`store.array(key)[a:b]`) and the .npy with np.load;
    best of `repeats` each, both from a warm page cache."""
    row = (dim // 4, 2, 2)
    nbytes = rows * dim * 2
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="diffprobe-io-") if root is None else nullcontext(root) as folder:
        folder = Path(folder)
        started = time.perf_counter()
        store = FeatureStore.create(
            folder / "io.zarr",
            row_shapes={STORE_KEY: row},
            ids=[str(i) for i in range(rows)],
            labels=np.zeros(rows, np.int64),
            index=np.arange(rows),
            shard_rows=shard_rows,
            views=1,
            dtype="float16",
            attrs={},
        )
        raw = folder / "raw.npy"
        data = np.lib.format.open_memmap(raw, mode="w+", dtype=np.float16, shape=(rows, *row))
        for s in range(store.n_shards):
            span = store.shard_rows(s)
            x = rng.standard_normal((len(span), *row), dtype=np.float32).astype(np.float16)
            store.write_shard(s, {STORE_KEY: x}, np.ones(len(span), bool))
            data[span.start : span.stop] = x
        data.flush()
        del data
        write_s = time.perf_counter() - started
        spans = [(r.start, r.stop) for r in map(store.shard_rows, range(store.n_shards))]
        array = store.array(STORE_KEY)
        reader = "diffprobe shard reader" if getattr(array, "fast", False) else "zarr-python"

        def store_read():
            a = store.array(STORE_KEY)
            return [a[lo:hi] for lo, hi in spans]

        # also warms the page cache
        matches = bool(np.array_equal(np.concatenate(store_read()), np.load(raw)))
        store_s = best_time(store_read, repeats)
        numpy_s = best_time(lambda: np.load(raw), repeats)
        return {
            "rows": rows,
            "row_shape": list(row),
            "dtype": "float16",
            "mb": round(nbytes / 1e6, 1),
            "store_mb": round(store.size_bytes() / 1e6, 1),
            "shard_rows": shard_rows,
            "shards": store.n_shards,
            "repeats": repeats,
            "reader": reader,
            "matches": matches,
            "write_seconds": round(write_s, 3),
            "store_seconds": round(store_s, 4),
            "numpy_seconds": round(numpy_s, 4),
            "store_mb_per_s": round(nbytes / 1e6 / store_s, 1),
            "numpy_mb_per_s": round(nbytes / 1e6 / max(numpy_s, 1e-9), 1),
            "store_rows_per_s": round(rows / store_s, 1),
            "store_over_numpy": round(store_s / max(numpy_s, 1e-9), 2),
            "error": "",
        }


# ---------------------------------------------------------------- c. bit identity on the device
def compare_stores(a: FeatureStore, b: FeatureStore) -> tuple[bool, float | None, list[str]]:
    """(every feature array equal bit for bit, max abs difference over them, the keys)."""
    keys = a.keys()
    if keys != b.keys():
        raise ValueError(
            f"the two stores hold different keys: {[str(k) for k in keys]} and {[str(k) for k in b.keys()]}"
        )
    identical, diff = True, 0.0
    for k in keys:
        x, y = a.array(k)[0 : a.n_rows], b.array(k)[0 : b.n_rows]
        if x.shape != y.shape or x.dtype != y.dtype:
            raise ValueError(f"{k}: shapes {x.shape} and {y.shape}, dtypes {x.dtype} and {y.dtype}")
        identical &= x.tobytes() == y.tobytes()
        d = np.abs(x.astype(np.float64) - y.astype(np.float64))
        if np.isnan(x).any() or np.isnan(y).any():  # an unwritten row in one store: never a match
            d = np.where(np.isnan(x) != np.isnan(y), np.inf, np.nan_to_num(d))
        diff = max(diff, float(d.max(initial=0.0)))
    return bool(identical), diff, [str(k) for k in keys]


def check_bit_identity(cfg: GpuBenchConfig, root: Path | None = None, deadline: float | None = None) -> dict:
    """Each identity dtype: the identity model (random weights) extracted twice on cfg.device
    from the same generated images, batch size one micro-batch and then two; compared.
    Dtypes not begun by `deadline` (time.monotonic()) are runs with a "skipped" error."""
    from extract.run import extract
    from extract.store.config import ExtractConfig, from_flat

    n = cfg.identity_images
    micro = max(1, n // 2)
    batch_sizes = (micro, 2 * micro)
    base = dict(
        model=cfg.identity_model,
        random_init=True,
        data="imagefolder",
        split="train",
        ts=(cfg.t,),
        pools=(None, 2),
        shard_rows=max(n, 1),
        micro_batch=micro,
        seed=cfg.seed,
        device=cfg.device,
        workers=0,
        progress=False,
    )
    result = {
        "model": cfg.identity_model,
        "images": n,
        "micro_batch": micro,
        "batch_sizes": list(batch_sizes),
        "runs": [],
        "identical": None,
        "error": "",
    }
    if n == 0:
        return {**result, "error": "skipped: identity_images is 0"}
    # extract() makes cuDNN deterministic for the process (extract.store.dist.process_group):
    # put the bench's settings back after
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        with (
            tempfile.TemporaryDirectory(prefix="diffprobe-identity-")
            if root is None
            else nullcontext(root) as folder
        ):
            folder = Path(folder)
            images = write_jpegs(folder / "images", n, IDENTITY_IMAGE_SIZE, cfg.seed)
            for dtype in cfg.identity_dtypes:
                run = {
                    "dtype": dtype,
                    "identical": None,
                    "max_abs_diff": None,
                    "keys": [],
                    "seconds": None,
                    "error": "",
                }
                if deadline is not None and time.monotonic() > deadline:
                    result["runs"].append({**run, "error": SKIPPED})
                    continue
                started = time.perf_counter()
                try:
                    stores = []
                    for batch_size in batch_sizes:
                        out = folder / f"{dtype}-batch{batch_size}.zarr"
                        extract(
                            from_flat(
                                ExtractConfig,
                                **base,
                                out=out,
                                data_root=images,
                                batch_size=batch_size,
                                dtype=dtype,
                            )
                        )
                        stores.append(FeatureStore.open(out))
                    run["identical"], run["max_abs_diff"], run["keys"] = compare_stores(*stores)
                except Exception as e:  # noqa: BLE001 - one dtype's failure is its line, the others go on
                    run["error"] = _first_line(e)
                run["seconds"] = round(time.perf_counter() - started, 2)
                result["runs"].append(run)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
    done = [r["identical"] for r in result["runs"] if not r["error"]]
    result["identical"] = (
        False if False in done else (True if done and len(done) == len(result["runs"]) else None)
    )
    return result


# ---------------------------------------------------------------- the three parts
def run_quick_bench(cfg: GpuBenchConfig) -> dict:
    """Parts a, b and c (and the loader, when loader_images > 0) with the machine and config
    (JSON-ready): run_gpu_bench's result plus `mode`, `extraction_error`, `loader_error`,
    `store_read`, `bit_identity`, `part_seconds` and `seconds`."""
    preset, device = validate_quick(cfg)
    started = time.monotonic()
    deadline = started + cfg.time_budget_s
    skipped = f"skipped: the time budget of {cfg.time_budget_s:.0f} s was spent"
    part_seconds: dict[str, float] = {}

    def part(name, fn, failed):
        if time.monotonic() > deadline:
            return failed(skipped)
        t0 = time.monotonic()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one line for the part, the others go on
            return failed(_first_line(e))
        finally:
            part_seconds[name] = round(time.monotonic() - t0, 2)

    def extraction():
        flops = flops_per_image(preset, cfg.block)
        peak, source = peak_tflops(cfg, device)
        return {
            "gflop_per_image": flops / 1e9,
            "peak_tflops": peak,
            "peak_source": source,
            "images_per_s_at_40pct_of_peak": 0.4 * peak * 1e12 / flops if peak else None,
            "extraction": [asdict(r) for r in bench_gpu(cfg, deadline=deadline, flops=flops)],
            "extraction_error": "",
        }

    a = part(
        "extraction",
        extraction,
        lambda e: {
            "gflop_per_image": None,
            "peak_tflops": None,
            "peak_source": "",
            "images_per_s_at_40pct_of_peak": None,
            "extraction": [],
            "extraction_error": e,
        },
    )
    loader = (
        part(
            "loader",
            lambda: {"loader": [asdict(r) for r in bench_loader(cfg)], "loader_error": ""},
            lambda e: {"loader": [], "loader_error": e},
        )
        if cfg.loader_images
        else {"loader": [], "loader_error": ""}
    )
    store_read = part(
        "store_read",
        lambda: bench_store_read(cfg.io_rows, cfg.io_dim, cfg.io_shard_rows, cfg.io_repeats, cfg.seed),
        lambda e: {"error": e},
    )
    identity = part(
        "bit_identity",
        lambda: check_bit_identity(cfg, deadline=deadline),
        lambda e: {"model": cfg.identity_model, "runs": [], "identical": None, "error": e},
    )
    best = max((r["images_per_s"] for r in a["extraction"] if r["images_per_s"]), default=None)
    best_loader = max((r["images_per_s"] for r in loader["loader"]), default=None)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick",
        "machine": machine_info(device),
        "config": asdict(cfg),
        **a,
        **loader,
        "best_extraction_images_per_s": best,
        "best_loader_images_per_s": best_loader,
        "loader_keeps_up": best_loader >= best if best and best_loader else None,
        "store_read": store_read,
        "bit_identity": identity,
        "part_seconds": part_seconds,
        "seconds": round(time.monotonic() - started, 2),
    }
