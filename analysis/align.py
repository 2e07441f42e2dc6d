"""`analysis align`: how one model's every cached (t, b) aligns with one layer of another model,
over the images both stores hold, by mutual kNN, CKNNA and unbiased CKA.

Rows of the two stores are paired by the images' pixel digests (by dataset id where a store has
no digests), so two stores of the same images in any order, or of overlapping subsets, compare
over what they share. Every row is L2-normalised first (the Platonic Representation Hypothesis'
convention). Memory stays within `max_bytes`: the neighbour search goes by tiles of rows
(`analysis.alignment.neighbours`), and unbiased CKA takes the same exact paths as `analysis cka`
(`analysis.linear_paths`), over the normalised rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.compare import model_label, select_keys
from analysis.alignment import cknna, mutual_knn, neighbours, normalise_rows
from analysis.align_config import AlignConfig
from analysis.linear_paths import Keys, linear_cka
from extract.store.feature_key import pool_label
from extract.store.schema import FeatureKey, FeatureStore, StoreError, open_complete

GATHER_GAP = 4096  # rows: scattered positions closer than this are read as one span


class PairedRows:
    """One key's rows at the given store positions, in that order, flattened and L2-normalised:
    an array-like of shape (m, d), float32, read by row slices."""

    def __init__(self, array, views: bool, positions: np.ndarray):
        self.array, self.views, self.positions = array, views, np.asarray(positions, np.int64)
        row = array.shape[2:] if views else array.shape[1:]
        self.shape = (len(self.positions), int(np.prod(row)))
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, item: slice) -> np.ndarray:
        wanted = self.positions[item]
        out = np.empty((len(wanted), self.shape[1]), np.float32)
        order = np.argsort(wanted, kind="stable")
        sorted_pos = wanted[order]
        start = 0
        while start < len(sorted_pos):  # spans of nearby positions, each read in one slice
            stop = start + 1
            while stop < len(sorted_pos) and sorted_pos[stop] - sorted_pos[stop - 1] < GATHER_GAP:
                stop += 1
            lo, hi = int(sorted_pos[start]), int(sorted_pos[stop - 1]) + 1
            block = self.array[lo:hi]
            block = (block[:, 0] if self.views else block).reshape(hi - lo, -1)
            out[order[start:stop]] = block[sorted_pos[start:stop] - lo]
            start = stop
        return normalise_rows(out)


def _digests(store: FeatureStore) -> list | None:
    """Each row's pixel digest as bytes (None where not recorded), or None for a store without them."""
    content = store.content_hashes()
    if content is None or not content.any():
        return None
    return [row.tobytes() if row.any() else None for row in content]


def pair_rows(
    sa: FeatureStore, sb: FeatureStore, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, str]:
    """Positions in a and in b of the images both hold (valid rows of each), in a's order, and
    what paired them ('pixel digest' or 'dataset id'). Refused, naming a pair, when they share none."""
    da, db = _digests(sa), _digests(sb)
    if da is not None and db is not None:
        by, ka, kb = "pixel digest", da, db
    else:
        by, ka, kb = "dataset id", [str(i) for i in sa.ids()], [str(i) for i in sb.ids()]
    va, vb = sa.valid(), sb.valid()
    where_b: dict = {}
    for pos, key in enumerate(kb):
        if key is not None and vb[pos]:
            where_b.setdefault(key, pos)
    pa, pb = [], []
    seen = set()
    for pos, key in enumerate(ka):
        if key is not None and va[pos] and key in where_b and key not in seen:
            seen.add(key)
            pa.append(pos)
            pb.append(where_b[key])
    if not pa:
        first_a, first_b = str(sa.ids()[0]), str(sb.ids()[0])
        raise StoreError(
            f"{names[0]} and {names[1]} share no image (paired by {by}): e.g. {names[0]}'s first image "
            f"{first_a!r} is not in {names[1]}, whose first is {first_b!r}; extract both from the same images"
        )
    return np.array(pa), np.array(pb), by


def _against(store: FeatureStore, text: str, name: str) -> FeatureKey:
    held = sorted(store.keys(), key=FeatureKey.sort_key)
    labels = ", ".join(k.label for k in held)
    if not text:
        if len(held) != 1:
            raise ValueError(f"{name} holds {len(held)} keys: choose one with --against ({labels})")
        return held[0]
    key = FeatureKey.parse(text)
    if key not in held:
        raise StoreError(f"{name} has no features for {key.label}; it holds: {labels}")
    return key


@dataclass
class AlignMap:
    rows: list[str]  # a's keys, as labels
    against: str  # b's key
    values: dict[str, list[float]]  # metric -> one value per row
    n: int  # images compared
    paired_by: str
    k: int
    sources: dict = field(default_factory=dict)

    def best(self) -> dict[str, dict]:
        """Per metric, the row with the highest value (NaN rows skipped)."""
        out = {}
        for metric, values in self.values.items():
            v = np.array(values, float)
            if np.isfinite(v).any():
                i = int(np.nanargmax(v))
                out[metric] = {"key": self.rows[i], "value": float(v[i])}
        return out


def align_map(cfg: AlignConfig) -> AlignMap:
    """The alignment of every selected key of store a with store b's chosen key (see AlignConfig)."""
    sa, sb = open_complete(cfg.a), open_complete(cfg.b)
    names = (f"{cfg.labels[0]} ({cfg.a})", f"{cfg.labels[1]} ({cfg.b})")
    keys_a = select_keys(sa.keys(), cfg.ts, cfg.bs, cfg.pools)
    if not keys_a:
        held = ", ".join(k.label for k in sa.keys())
        raise StoreError(
            f"no cached features of {names[0]} match t={list(cfg.ts) or 'any'} b={list(cfg.bs) or 'any'} "
            f"pool={list(cfg.pools) or 'any'}; it holds: {held}"
        )
    key_b = _against(sb, cfg.against, names[1])
    pa, pb, by = pair_rows(sa, sb, names)
    n = len(pa)
    if n <= cfg.k or n < 4:
        raise StoreError(f"the stores share {n} images: too few for k={cfg.k} neighbours (and at least 4)")
    rows_a = [PairedRows(sa.array(k), sa.views > 1, pa) for k in keys_a]
    row_b = PairedRows(sb.array(key_b), sb.views > 1, pb)
    values: dict[str, list[float]] = {}
    if "unbiased-cka" in cfg.metrics:
        arrays = [*rows_a, row_b]
        keys = Keys(arrays, [False] * len(arrays), [a.shape[1] for a in arrays], np.ones(n, bool))
        matrix, _ = linear_cka(
            keys,
            list(range(len(rows_a))),
            [len(rows_a)],
            max_bytes=cfg.max_bytes,
            block_rows=cfg.block_rows,
            progress=cfg.progress,
            estimator="unbiased",
        )
        values["unbiased-cka"] = [float(v) for v in matrix[:, 0]]
    if {"mutual-knn", "cknna"} & set(cfg.metrics):
        nb = neighbours(row_b, cfg.k, max_bytes=cfg.max_bytes, progress=cfg.progress, desc=key_b.label)
        found = [
            neighbours(r, cfg.k, max_bytes=cfg.max_bytes, progress=cfg.progress, desc=key.label)
            for r, key in zip(rows_a, keys_a)
        ]
        if "mutual-knn" in cfg.metrics:
            values["mutual-knn"] = [mutual_knn(na, nb) for na in found]
        if "cknna" in cfg.metrics:
            values["cknna"] = [cknna(na, nb) for na in found]
    sources = {
        cfg.labels[0]: {"store": str(cfg.a), "model": model_label(sa)},
        cfg.labels[1]: {"store": str(cfg.b), "model": model_label(sb)},
    }
    ordered = {m: values[m] for m in cfg.metrics}
    return AlignMap([k.label for k in keys_a], key_b.label, ordered, n, by, cfg.k, sources)


def _grid(m: AlignMap) -> tuple[list[str], list[int], dict[str, np.ndarray]]:
    """Each metric as a (t, pool) x b grid: row labels, blocks, (rows, blocks) arrays (NaN: absent)."""
    keys = [FeatureKey.parse(r) for r in m.rows]
    names = [f"t{k.t} {pool_label(k.pool)}" for k in keys]
    row_labels = list(dict.fromkeys(names))
    blocks = sorted({k.b for k in keys})
    grids = {}
    for metric, values in m.values.items():
        g = np.full((len(row_labels), len(blocks)), np.nan)
        for k, name, v in zip(keys, names, values):
            g[row_labels.index(name), blocks.index(k.b)] = v
        grids[metric] = g
    return row_labels, blocks, grids


def write_align_map(m: AlignMap, out: Path, title: str, invocation: dict | None) -> None:
    """The maps as one figure (`out`, .png, with an .svg beside it) and as JSON beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    row_labels, blocks, grids = _grid(m)
    best = m.best()
    fig, axes = plt.subplots(
        len(grids),
        1,
        figsize=(max(6.0, 2.0 + 0.42 * len(blocks)), 1.4 + (1.0 + 0.38 * len(row_labels)) * len(grids)),
        constrained_layout=True,
        squeeze=False,
    )
    for ax, (metric, g) in zip(axes[:, 0], grids.items()):
        im = ax.imshow(g, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(blocks)), [f"b{b}" for b in blocks], fontsize=9)
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=9)
        where = f"best {best[metric]['key']} = {best[metric]['value']:.3f}" if metric in best else "no value"
        ax.set_title(f"{metric} ({where})", fontsize=10)
        fig.colorbar(im, ax=ax)
    a, b = list(m.sources)
    fig.suptitle(
        f"{title}\n{a}: {m.sources[a]['model']} against {b}: {m.sources[b]['model']} {m.against}\n"
        f"{m.n} images paired by {m.paired_by}, k={m.k}",
        fontsize=10,
    )
    fig.savefig(out, dpi=130)
    fig.savefig(out.with_suffix(".svg"))
    plt.close(fig)
    record = {
        "rows": m.rows,
        "against": m.against,
        "metrics": {k: [round(v, 6) for v in vs] for k, vs in m.values.items()},
        "best": best,
        "images": m.n,
        "paired_by": m.paired_by,
        "k": m.k,
        "rows_normalised": "L2, per image",
        "sources": m.sources,
        "invocation": invocation,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
