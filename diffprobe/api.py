"""diffprobe from Python: extract, probe and compare in a few lines.

Each function is a keyword shell over the stage's own typed library call, as the commands
are: names and defaults are the command line's (`python -m extract run --help` and so on), and
what a function writes is what the command writes. Stages load only when called.

    from diffprobe import api
    api.extract("cache/train.zarr", split="train", t=[10], b=[9], pool=[2], limit=2000)
    api.extract("cache/test.zarr", split="test", t=[10], b=[9], pool=[2], limit=1000)
    result = api.probe("cache/train.zarr", test="cache/test.zarr")
    cka = api.cka("cache/test.zarr")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


def extract(
    out: str | Path,
    *,
    model: str = "demo-fmnist",
    data: str = "fashion-mnist",
    split: str = "train",
    t: Iterable[int] = (150,),
    b: Iterable[int] = (24,),
    pool: Iterable[int | str | None] = (2,),
    limit: int | None = None,
    **options: Any,
):
    """Extract features of blocks b at timesteps t, pooled p x p ('full' or None: the whole map),
    into the store `out` (created or resumed). Other options as `extract run`'s, in Python
    spelling (ckpt=, random_init=, data_root=, micro_batch=, device=, ...). Returns its summary."""
    from extract.run import extract as run
    from extract.store.config import ExtractConfig, from_flat
    from extract.store.schema import parse_pool

    cfg = from_flat(
        ExtractConfig,
        out=Path(out),
        model=model,
        data=data,
        split=split,
        ts=tuple(t),
        blocks=tuple(b),
        pools=tuple(parse_pool(p) for p in pool),
        limit=limit,
        **{"progress": False, **options},
    )
    return run(cfg)


def probe(
    train: str | Path,
    *,
    test: str | Path | None = None,
    heads: Iterable[str] = ("linear",),
    results: str | Path = "results",
    epochs: int | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> dict:
    """Train heads on a training store's features (validation carved from it), select on
    validation, report on `test`. Other options as `ProbeConfig`'s (lrs=, wds=, features=, ...).
    Returns the results dict that is also written to `results/NAME.json`."""
    import dataclasses

    from probe.config import ProbeConfig, TrainSettings
    from probe.run import probe as run

    given = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None}
    training = dataclasses.replace(TrainSettings(), **given)
    cfg = ProbeConfig(
        train=Path(train),
        test=None if test is None else Path(test),
        heads=tuple(heads),
        results=Path(results),
        training=options.pop("training", training),
        **{"progress": False, **options},
    )
    return run(cfg)


def cka(a: str | Path, b: str | Path | None = None, **options: Any):
    """Linear CKA between every key of store a (and of store b, on the same images): a CkaMap
    with `matrix`, `rows`, `cols` (options as `analysis cka`'s: ts=, bs=, pools=, kernel=, ...)."""
    from analysis.cka_config import CkaConfig
    from analysis.compare import cka_map

    return cka_map(CkaConfig(Path(a), None if b is None else Path(b), **{"progress": False, **options}))
