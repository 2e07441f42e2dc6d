"""CKA maps between the cached features of one or two stores, streamed row block by row block."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.cka import hsic_unbiased, kernel_cka, linear_gram, rbf_gram  # noqa: E402
from analysis.cka_config import CkaConfig  # noqa: E402
from analysis.linear_paths import Keys, linear_cka, valid_blocks  # noqa: E402
from extract.store.progress import bar as progress_bar  # noqa: E402
from extract.store.schema import FeatureKey, FeatureStore, StoreError, open_complete  # noqa: E402
from extract.store.window_order import shuffled_windows  # noqa: E402


@dataclass
class CkaMap:
    matrix: np.ndarray  # (len(rows), len(cols))
    rows: list[str]  # "<store label> t../b../p.." per row block
    cols: list[str]
    n: int  # images compared
    sources: dict  # label -> store path and model
    kernel: str = "linear"
    method: str = ""  # linear: the exact path taken (moments, gram, pairwise or tiles)
    estimator: str = "biased"  # the HSIC estimator: biased or unbiased


def _label(key: FeatureKey) -> str:
    return key.label


def model_label(store: FeatureStore) -> str:
    """A store's model and weights, as maps name them: 'preset (sha256 prefix)' or '(random-init)'."""
    attrs = store.attrs
    weights = attrs.get("key", {}).get("weights", {})
    tag = "random-init" if weights.get("random_init") else str(weights.get("sha256", "none"))[:12]
    return f"{attrs.get('provenance', {}).get('preset', '?')} ({tag})"


def select_keys(keys: list[FeatureKey], ts=(), bs=(), pools=()) -> list[FeatureKey]:
    """The keys matching every given filter (an empty filter matches all), sorted."""
    chosen = [
        k for k in keys if (not ts or k.t in ts) and (not bs or k.b in bs) and (not pools or k.pool in pools)
    ]
    return sorted(chosen, key=FeatureKey.sort_key)


def _rbf(arrays, views, dims, valid, rows, cols, max_rows, bandwidth, progress, estimator="biased"):
    n = int(valid.sum())
    if n > max_rows:
        raise ValueError(
            f"rbf CKA keeps n x n kernels: {n} images is more than --max-rows {max_rows}; "
            "extract with --limit or use --kernel linear"
        )
    parts = [[] for _ in arrays]
    for blocks in valid_blocks(arrays, views, valid, list(range(len(arrays))), 4096, progress):
        for i, b in enumerate(blocks):
            parts[i].append(b.astype(np.float64))
    grams = [rbf_gram(np.concatenate(p), bandwidth) for p in parts]
    return np.array([[kernel_cka(grams[i], grams[j], estimator) for j in cols] for i in rows]), n


MINIBATCH_WINDOW_BYTES = 1 << 30  # feature rows held at once by minibatch CKA's shuffle window


def _shuffled_batches(arrays, views, dims, valid, batch, block_rows, seed, progress):
    """Valid rows in the floor's seeded window order (`extract.store.window_order`), as minibatches of
    `batch` rows: lists of (batch, d_i) float64 arrays. A class-sorted store thus gives batches
    that mix classes, as the probe's do; memory is bounded by one window."""
    window_rows = max(batch, MINIBATCH_WINDOW_BYTES // (2 * sum(dims)))
    plan = shuffled_windows(len(valid), block_rows, valid, window_rows, np.random.default_rng([seed, 13]))
    carry = None
    for blocks, rows in progress_bar(progress, iterable=plan, desc="cka", unit="window"):
        starts = sorted(blocks)
        where = {}
        parts = [[] for _ in arrays]
        offset = 0
        for b in starts:
            start, stop = b * block_rows, min((b + 1) * block_rows, len(valid))
            where[b] = offset
            offset += stop - start
            for i, (arr, v) in enumerate(zip(arrays, views)):
                x = arr[start:stop]
                parts[i].append((x[:, 0] if v else x).reshape(stop - start, -1))
        take = np.array([where[r // block_rows] + r % block_rows for r in rows], dtype=np.int64)
        values = [np.concatenate(p)[take].astype(np.float64) for p in parts]
        if carry is not None:
            values = [np.concatenate([c, x]) for c, x in zip(carry, values)]
        full = len(values[0]) // batch * batch
        for start in range(0, full, batch):
            yield [x[start : start + batch] for x in values]
        carry = [x[full:] for x in values]
    if carry is not None and len(carry[0]):
        yield carry


def _minibatch(arrays, views, dims, valid, rows, cols, batch, block_rows, seed, progress):
    pairs = {(i, j) for i in rows for j in cols} | {(i, i) for i in rows} | {(j, j) for j in cols}
    sums = dict.fromkeys(pairs, 0.0)
    n = 0
    for blocks in _shuffled_batches(arrays, views, dims, valid, batch, block_rows, seed, progress):
        if len(blocks[0]) < 4:
            continue  # the unbiased estimator needs 4 rows; a short last batch is left out
        grams = [linear_gram(b) for b in blocks]
        for i, j in pairs:
            sums[(i, j)] += hsic_unbiased(grams[i], grams[j])
        n += len(blocks[0])
    if n == 0:
        raise StoreError("no minibatch of at least 4 valid images to compare")
    return np.array([[sums[(i, j)] / np.sqrt(sums[(i, i)] * sums[(j, j)]) for j in cols] for i in rows]), n


def cka_map(cfg: CkaConfig) -> CkaMap:
    """The CKA map `cfg` asks for (see CkaConfig). Rows are matched by image id: stores holding
    different image sets are refused."""
    sa = open_complete(cfg.a)
    sb = open_complete(cfg.b) if cfg.b is not None else None
    if sb is not None and not np.array_equal(sa.ids(), sb.ids()):
        raise StoreError(
            f"{cfg.a} and {cfg.b} hold different image sets (ids differ); "
            "extract both with the same --data, --split and --limit"
        )
    valid = sa.valid() & (sb.valid() if sb is not None else True)
    keys_a = select_keys(sa.keys(), cfg.ts, cfg.bs, cfg.pools)
    keys_b = select_keys(sb.keys(), cfg.ts, cfg.bs, cfg.pools) if sb is not None else []
    if not keys_a or (sb is not None and not keys_b):
        held = ", ".join(str(k) for k in sa.keys())
        raise StoreError(
            f"no cached features match t={list(cfg.ts) or 'any'} b={list(cfg.bs) or 'any'} "
            f"pool={list(cfg.pools) or 'any'}; {cfg.a} holds: {held}"
        )
    arrays = [sa.array(k) for k in keys_a] + ([sb.array(k) for k in keys_b] if sb is not None else [])
    views = [sa.views > 1] * len(keys_a) + [sb is not None and sb.views > 1] * len(keys_b)
    dims = [int(np.prod(arr.shape[2:] if v else arr.shape[1:])) for arr, v in zip(arrays, views)]
    n_a = len(keys_a)
    rows = list(range(n_a))
    cols = list(range(n_a, n_a + len(keys_b))) if sb is not None else rows
    method = ""
    if cfg.kernel == "linear":
        n = int(valid.sum())
        if n < 2:
            raise StoreError("fewer than 2 valid images to compare")
        matrix, method = linear_cka(
            Keys(arrays, views, dims, valid),
            rows,
            cols,
            max_bytes=cfg.max_bytes,
            block_rows=cfg.block_rows,
            path=cfg.linear_path,
            device=cfg.device,
            progress=cfg.progress,
            estimator=cfg.hsic,
        )
    elif cfg.kernel == "rbf":
        matrix, n = _rbf(
            arrays, views, dims, valid, rows, cols, cfg.max_rows, cfg.bandwidth, cfg.progress, cfg.hsic
        )
    else:
        matrix, n = _minibatch(
            arrays, views, dims, valid, rows, cols, cfg.batch, cfg.block_rows, cfg.seed, cfg.progress
        )
    labels = cfg.labels
    col_keys = keys_b if sb is not None else keys_a
    col_label = labels[1] if sb is not None else labels[0]
    sources = {labels[0]: {"store": str(cfg.a), "model": model_label(sa)}}
    if sb is not None:
        sources[labels[1]] = {"store": str(cfg.b), "model": model_label(sb)}
    return CkaMap(
        matrix,
        [f"{labels[0]} {_label(k)}" for k in keys_a],
        [f"{col_label} {_label(k)}" for k in col_keys],
        n,
        sources,
        cfg.kernel,
        method,
        cfg.hsic,
    )


def write_cka_map(m: CkaMap, cfg: CkaConfig, out: Path, title: str, invocation: dict | None) -> None:
    """The map as a figure (`out`, .png, and an .svg beside it) and as JSON beside it, with the
    command that made it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_cka(m, title)
    fig.savefig(out, dpi=130)
    fig.savefig(out.with_suffix(".svg"))
    record = {
        "rows": m.rows,
        "cols": m.cols,
        "cka": m.matrix.round(6).tolist(),
        "images": m.n,
        "kernel": m.kernel,
        "estimator": m.estimator,
        "sources": m.sources,
        **({"batch": cfg.batch, "seed": cfg.seed} if cfg.kernel == "minibatch" else {}),
        **({"path": m.method} if m.method else {}),
        "invocation": invocation,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


def plot_cka(m: CkaMap, title: str) -> plt.Figure:
    """A heatmap of the map with labelled axes, the values written in small maps, and a colour bar."""
    h, w = m.matrix.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 + 0.45 * w), 2.4 + 0.4 * h), constrained_layout=True)
    im = ax.imshow(m.matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(w), m.cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(h), m.rows, fontsize=7)
    if h * w <= 400:
        for i in range(h):
            for j in range(w):
                ax.text(
                    j,
                    i,
                    f"{m.matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if m.matrix[i, j] < 0.6 else "black",
                )
    fig.colorbar(im, ax=ax, label=f"{m.kernel} CKA" + (" (unbiased)" if m.estimator == "unbiased" else ""))
    source = "\n".join(f"{k}: {v['model']}\n{Path(v['store']).name}" for k, v in m.sources.items())
    ax.set_title(f"{title}\n{source}\n{m.n} images", fontsize=7)
    return fig
