"""Choices made on validation, reused. `select_run`: one run chosen among several, the runs of
a grid that cannot be one `probe train` (fine-tuning at several learning rates, one run each).
The run with the best validation top-1 (on ties the first or the last in the order given, as
asked; test is never looked at) is copied under a new name, with its test predictions, and
records what it was chosen from.
`chosen_features`: the feature set a run chose, so that a costly head (attention) is trained
only where a cheap grid (linear) chose, as the paper trains its heavier heads at the linear
probe's block. numpy only."""

from __future__ import annotations

import shutil
from pathlib import Path

from extract.store.schema import FeatureKey
from probe.tables import expand, read_results, write_json


def select_run(items, name: str, out_dir: Path, ties: str = "first") -> dict:
    """The validation-best of the results files (paths or globs), written as out_dir/NAME.json
    (and NAME.predictions.npz); returns that results dict. `ties`: which of equal validation
    scores wins, "first" or "last" in the order given (e.g. "last": the longest-trained snapshot)."""
    if ties not in ("first", "last"):
        raise ValueError(f"ties must be 'first' or 'last', got {ties!r}")
    files = list(dict.fromkeys(expand(items)))
    if len(files) < 2:
        raise ValueError(f"give at least two runs to choose from, got {len(files)}")
    runs = [(f, read_results(f)) for f in files]
    for f, r in runs:
        if (r.get("val") or {}).get("top1") is None:
            raise ValueError(
                f"{f}: run {r.get('name', f.stem)} has no validation score to choose on "
                "(trained without a validation split)"
            )
    order = runs if ties == "first" else runs[::-1]
    path, best = max(order, key=lambda fr: fr[1]["val"]["top1"])  # max keeps the first of equal scores
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = {
        **best,
        "name": name,
        "selected_from": [
            {"name": r.get("name"), "results": str(f), "val_top1": r["val"]["top1"]} for f, r in runs
        ],
        "selected_run": best.get("name"),
    }
    if best.get("predictions"):
        src = path.parent / best["predictions"]
        if not src.is_file():
            raise FileNotFoundError(f"{path}: predictions file not found: {src}")
        chosen["predictions"] = f"{name}.predictions.npz"
        if src.resolve() != (out_dir / chosen["predictions"]).resolve():
            shutil.copyfile(src, out_dir / chosen["predictions"])
    write_json(out_dir / f"{name}.json", chosen)
    return chosen


def chosen_features(path: str | Path) -> str:
    """The feature set (e.g. 't10/b9/full') of the member a probe run chose on validation. A run
    of several members without a validation score chose nothing: one clear error."""
    result = read_results(path)
    keys = (result.get("head") or {}).get("features")
    if not keys:
        raise ValueError(f"{path}: records no chosen feature set")
    if len(result.get("members") or ()) > 1 and (result.get("val") or {}).get("top1") is None:
        raise ValueError(
            f"{path}: its {len(result['members'])} members were not chosen on validation; "
            "use a run that had a validation split"
        )
    try:
        return "+".join(FeatureKey.from_dict(k).label for k in keys)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: its chosen feature set is not a list of (t, b, pool) keys") from None
