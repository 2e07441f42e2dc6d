"""The report's figures, drawn for its page: each is drawn at the width it is shown at (at most
the page's), with text of at least LEGIBLE_PX pixels there, so nothing is scaled down to a few
pixels. CKA maps are redrawn from their JSON (a 37-block map saved for print is 2,500 pixels
wide, its labels shrunk to 5 pixels on the page); tick labels keep only what varies (b1..b37
under one axis title that names the model, t and pool), and the blocks of a staged network
carry their layer's name (a classifier's `embedding`, not `t0/b4`). matplotlib and numpy only.
"""

from __future__ import annotations

import io
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.curves import AXES, best_per_value  # noqa: E402

PAGE_PX = 1150  # the page's content width (report.STYLE: max-width 1200px less padding)
DPI = 100  # figure inches x DPI = pixels on the page (the PNG is drawn at 2x for sharpness)
SCALE = 2
FONT = 11  # points: 11 pt at 100 dpi is 15 px
LEGIBLE_PX = 12
KERNEL_NAMES = {"linear": "Linear CKA", "rbf": "RBF-kernel CKA", "minibatch": "Minibatch CKA (unbiased HSIC)"}
_KEY = re.compile(r"^(?P<who>.*?) ?t(?P<t>\d+)/b(?P<b>\d+)/(?P<pool>p\d+|full)$")


@dataclass
class Figure:
    name: str
    png: bytes
    caption: str
    width: int = 0  # the pixels it is shown at on the page (0: its own)


def png_of(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI * SCALE)
    plt.close(fig)
    return buffer.getvalue()


def smallest_text_px(fig) -> float:
    """The height in page pixels of the smallest text the figure draws (at DPI, as shown)."""
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()]
    return min(sizes) * DPI / 72 if sizes else float("inf")


def layers_of(provenance: dict | None) -> dict[str, str]:
    """Block number (as text) -> layer name, as a staged network's store records them in its
    provenance ("layers"); {} for any other store."""
    layers = (provenance or {}).get("layers")
    return {str(k): str(v) for k, v in layers.items()} if isinstance(layers, dict) else {}


def store_layers(path: str | Path) -> dict[str, str]:
    """The layer names a store records, read from the store itself; {} when it is gone or has none."""
    from extract.store.schema import FeatureStore

    try:
        return layers_of(FeatureStore.open(path).attrs.get("provenance"))
    except Exception:  # noqa: BLE001 - a missing or unreadable store only loses the names
        return {}


def block_cell(layers: dict[str, str], b) -> str:
    """A results row's block as the page shows it: with its layer's name where the store named
    it ("4: embedding"), else as it is."""
    return f"{b}: {layers[str(b)]}" if str(b) in layers else str(b)


def _axis_labels(labels: list[str], layers: dict[str, dict[str, str]]) -> tuple[list[str], str]:
    """Tick labels with what all share taken out, and that shared part as the axis title.
    layers: a label's leading word -> its store's layer names (block -> name)."""
    parts = [_KEY.match(s) for s in labels]
    if not all(parts):
        return labels, ""
    fields = {k: [p[k] for p in parts] for k in ("who", "t", "b", "pool")}
    same = {k: len(set(v)) == 1 for k, v in fields.items()}
    who = fields["who"][0]
    named = [layers.get(p["who"], {}).get(p["b"]) for p in parts]
    ticks = []
    for p, name in zip(parts, named):
        bits = [] if same["who"] else [p["who"]]
        bits += [] if same["t"] else [f"t{p['t']}"]
        bits += [name or f"b{p['b']}"] if not same["b"] else []
        bits += [] if same["pool"] else [p["pool"]]
        ticks.append(" ".join(bits) or name or f"b{p['b']}")
    shared = [who] if same["who"] else []
    shared += [f"t={fields['t'][0]}"] if same["t"] else []
    shared += [f"block {named[0] or fields['b'][0]}"] if same["b"] else []
    shared += [f"pool {fields['pool'][0]}"] if same["pool"] else []
    return ticks, ", ".join(x for x in shared if x)


def cka_figure(meta: dict, name: str) -> plt.Figure:
    """A CKA map (its JSON record) as a heatmap sized to the page."""
    m = np.asarray(meta["cka"], float)
    h, w = m.shape
    layers = {k: store_layers(v.get("store", "")) for k, v in meta.get("sources", {}).items()}
    rows, row_title = _axis_labels(meta["rows"], layers)
    cols, col_title = _axis_labels(meta["cols"], layers)
    cell = min(0.55, max(0.22, 8.0 / max(h, w)))  # inches a cell: 37 blocks fill the page's width
    fig, ax = plt.subplots(
        figsize=(min(PAGE_PX / DPI, 3.5 + cell * w), 2.2 + cell * h), constrained_layout=True
    )
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    tick = FONT if max(h, w) <= 24 else FONT - 2
    ax.set_xticks(
        range(w), cols, rotation=90 if w > 12 else 45, ha="center" if w > 12 else "right", fontsize=tick
    )
    ax.set_yticks(range(h), rows, fontsize=tick)
    ax.set_xlabel(col_title, fontsize=FONT)
    ax.set_ylabel(row_title, fontsize=FONT)
    if h * w <= 144:
        for i in range(h):
            for j in range(w):
                color = "white" if m[i, j] < 0.6 else "black"
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=FONT - 2, color=color)
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    bar.set_label(KERNEL_NAMES.get(meta.get("kernel", "linear"), "CKA"), fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT - 1)
    title = (meta.get("invocation") or {}).get("options", {}).get("title") or name
    chars = int(fig.get_figwidth() * 72 / (FONT + 2) * 1.6)  # a title line fits the figure's width
    ax.set_title(f"{textwrap.fill(title, chars)}\n{meta.get('images', '?')} images", fontsize=FONT + 2)
    return fig


def cka_figures(cka_dirs: list[Path]) -> list[Figure]:
    """Every CKA map (a JSON record) in the folders, redrawn for the page and captioned with its
    kernel, path and stores."""
    out = []
    for folder in cka_dirs:
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(meta, dict) or "cka" not in meta or "rows" not in meta:
                continue
            kernel = KERNEL_NAMES.get(meta.get("kernel", "linear"), f"{meta.get('kernel')} CKA")
            how = f", by {meta['path']}" if meta.get("path") else ""
            sources = "; ".join(
                f"{k}: {v.get('model', '?')}, `{Path(v.get('store', '?')).name}`"
                for k, v in meta.get("sources", {}).items()
            )
            caption = f"{kernel} over {meta.get('images', '?')} images{how}. {sources}. From `{path}`."
            out.append(figure(path.stem, cka_figure(meta, path.stem), caption))
    return out


def figure(name: str, fig: plt.Figure, caption: str) -> Figure:
    """A drawn figure as the page shows it (the figure is closed)."""
    width = int(round(fig.get_figwidth() * DPI))
    return Figure(name, png_of(fig), caption, width)


def curves_figure(name: str, members: list[dict], layers: dict[str, str]) -> tuple[plt.Figure, str]:
    """Test top-1 of the validation-best member at each value of every axis the grid varies
    (one panel each, sized to the page); an axis held at one value is said in the note instead.
    A staged network's blocks are named by layer. Returns (figure, that note)."""
    varied = [a for a in AXES if len(best_per_value(members, a)) > 1]
    fixed = [f"{a}={next(iter(best_per_value(members, a)))}" for a in AXES if a not in varied]
    fig, axes = plt.subplots(
        1, len(varied), figsize=(PAGE_PX / DPI, 3.8), constrained_layout=True, squeeze=False
    )
    for ax, axis in zip(axes[0], varied):
        best = best_per_value(members, axis)
        named = axis == "b" and any(str(v) in layers for v in best)
        xs = [layers.get(str(v), str(v)) if named else str(v) for v in best]
        ax.plot(xs, [m["test"]["top1"] for m in best.values()], marker="o")
        ax.set_xlabel({"t": "timestep t", "b": "block b", "pool": "pool p (p x p)"}[axis], fontsize=FONT)
        ax.set_ylabel("test top-1 (%)", fontsize=FONT)
        ax.tick_params(labelsize=FONT - 1)
        if named:
            ax.set_xlabel("layer", fontsize=FONT)
            ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{name}: test top-1 of the validation-best member per value", fontsize=FONT + 1)
    return fig, ", ".join(fixed)
