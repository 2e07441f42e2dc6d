"""CKA maps between the cached features of one or two stores, streamed row block by row block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from analysis.cka import CrossMoments, linear_cka_matrix  # noqa: E402
from extract.schema import FeatureKey, FeatureStore, StoreError  # noqa: E402
from probe.reader import open_complete  # noqa: E402


@dataclass
class CkaMap:
    matrix: np.ndarray  # (len(rows), len(cols))
    rows: list[str]  # "label t.. b.. p.." per row block
    cols: list[str]
    n: int  # images compared
    sources: dict  # label -> store path and model


def _label(key: FeatureKey) -> str:
    return f"t{key.t} b{key.b} p{'full' if key.pool is None else key.pool}"


def _model(store: FeatureStore) -> str:
    attrs = store.attrs
    weights = attrs.get("key", {}).get("weights", {})
    tag = "random-init" if weights.get("random_init") else str(weights.get("sha256", "none"))[:12]
    return f"{attrs.get('provenance', {}).get('preset', '?')} ({tag})"


MAX_MOMENT_BYTES = 2 << 30  # the float64 (d x d) feature Gram matrix of all compared keys


def select_keys(keys: list[FeatureKey], ts=(), bs=(), pools=()) -> list[FeatureKey]:
    """The keys matching every given filter (an empty filter matches all), sorted."""
    chosen = [k for k in keys if (not ts or k.t in ts) and (not bs or k.b in bs) and (not pools or k.pool in pools)]
    return sorted(chosen, key=FeatureKey.sort_key)


def cka_map(a: str | Path, b: str | Path | None = None, labels: tuple[str, str] = ("A", "B"), *, ts=(), bs=(), pools=(),
            block_rows: int = 4096, progress: bool = True) -> CkaMap:  # fmt: skip
    """Linear CKA of every selected key of store a against every selected key of store b (or
    of a itself). Rows are matched by image id: stores holding different image sets are refused."""
    sa = open_complete(a)
    sb = open_complete(b) if b is not None else None
    if sb is not None and not np.array_equal(sa.ids(), sb.ids()):
        raise StoreError(f"{a} and {b} hold different image sets (ids differ); extract both with the same --data, --split and --limit")
    valid = sa.valid() & (sb.valid() if sb is not None else True)
    keys_a = select_keys(sa.keys(), ts, bs, pools)
    keys_b = select_keys(sb.keys(), ts, bs, pools) if sb is not None else []
    if not keys_a or (sb is not None and not keys_b):
        held = ", ".join(str(k) for k in sa.keys())
        raise StoreError(f"no cached features match t={list(ts) or 'any'} b={list(bs) or 'any'} pool={list(pools) or 'any'}; {a} holds: {held}")
    arrays = [sa.array(k) for k in keys_a] + ([sb.array(k) for k in keys_b] if sb is not None else [])
    views = [sa.views > 1] * len(keys_a) + [sb is not None and sb.views > 1] * len(keys_b)
    dims = [int(np.prod(arr.shape[2:] if v else arr.shape[1:])) for arr, v in zip(arrays, views)]
    if 8 * sum(dims) ** 2 > MAX_MOMENT_BYTES:
        raise ValueError(f"{len(dims)} keys with {sum(dims)} features in all need a {8 * sum(dims) ** 2 / 2**30:.1f} GiB moment matrix; "
                         "select fewer keys (--t, --b, --pool) or smaller pools")  # fmt: skip
    moments = CrossMoments(dims)
    for start in tqdm(range(0, sa.n_rows, block_rows), desc="cka", unit="block", disable=not progress):
        stop = min(start + block_rows, sa.n_rows)
        use = valid[start:stop]
        if not use.any():
            continue
        blocks = []
        for arr, v in zip(arrays, views):
            x = arr[start:stop]
            x = x[:, 0] if v else x
            blocks.append(x.reshape(len(x), -1)[use].astype(np.float64))
        moments.add(blocks)
    if moments.n < 2:
        raise StoreError(f"{a}: fewer than 2 valid images to compare")
    n_a = len(keys_a)
    cols = list(range(n_a, n_a + len(keys_b))) if sb is not None else list(range(n_a))
    matrix = linear_cka_matrix(moments, list(range(n_a)), cols)
    col_keys = keys_b if sb is not None else keys_a
    col_label = labels[1] if sb is not None else labels[0]
    sources = {labels[0]: {"store": str(a), "model": _model(sa)}}
    if sb is not None:
        sources[labels[1]] = {"store": str(b), "model": _model(sb)}
    return CkaMap(matrix, [f"{labels[0]} {_label(k)}" for k in keys_a], [f"{col_label} {_label(k)}" for k in col_keys], moments.n, sources)


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
                ax.text(j, i, f"{m.matrix[i, j]:.2f}", ha="center", va="center", fontsize=6, color="white" if m.matrix[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="linear CKA")
    source = "\n".join(f"{k}: {v['model']}\n{Path(v['store']).name}" for k, v in m.sources.items())
    ax.set_title(f"{title}\n{source}\n{m.n} images", fontsize=7)
    return fig
