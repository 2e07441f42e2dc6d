"""Which rows a store holds: the selection's checks, the rows in their store order, and the
dataset part of the store key, the same for every store kind."""

from __future__ import annotations

import numpy as np

from extract.data.registry import get_dataset, open_dataset, parse_options
from extract.data.sources import DataError, ImageSource
from extract.data.subsets import Subset, apply_subset, rows_digest
from extract.store.config import DataSelection

ROW_ORDERS = ("sorted", "shuffled")


def order_rows(rows: np.ndarray, order: str, seed: int) -> np.ndarray:
    """The store's row order. Datasets list images class by class, so a sorted store is
    class-sorted; "shuffled" writes the rows in a seeded permutation, so that any run of
    consecutive rows (what the probe reads at once, and minibatch CKA's batches) mixes the
    classes as an i.i.d. sample would. Features depend on the image's dataset index, never on
    its row, so both orders hold the same values."""
    if order == "sorted":
        return rows
    return rows[np.random.default_rng([seed, 0x0DE12]).permutation(len(rows))]


def check_selection(sel: DataSelection) -> None:
    """Every error in a data selection that needs no file read."""
    if sel.order not in ROW_ORDERS:
        raise ValueError(f"--order must be one of {', '.join(ROW_ORDERS)}, got {sel.order!r}")
    if sel.limit is not None and sel.limit < 1:
        raise ValueError(f"--limit must be positive, got {sel.limit}")
    if sel.per_class is not None and sel.per_class < 1:
        raise ValueError(f"--per-class must be positive, got {sel.per_class}")
    spec = get_dataset(sel.data)
    spec.check_split(sel.split)
    parse_options(spec, sel.data_opts)


def select_data(sel: DataSelection, seed: int) -> tuple[ImageSource, np.ndarray, dict]:
    """(the source, the sorted rows to extract, the dataset part of the store key): the same
    rows for every store kind given the same selection and seed (the selection's `data_seed`
    when set, so that runs of several noise seeds can read the same images)."""
    check_selection(sel)
    spec = get_dataset(sel.data)
    options = parse_options(spec, sel.data_opts)
    source = open_dataset(sel.data, sel.data_root, sel.split, options)
    if len(source) == 0:
        raise DataError(f"{source.location}: the dataset has no images")
    seed = seed if sel.data_seed is None else sel.data_seed
    subset = Subset(sel.classes_file, sel.subset, sel.per_class, sel.limit, seed)
    source, rows = apply_subset(source, subset)
    if len(rows) == 0:
        raise DataError(f"{source.location}: the subset selects no images")
    rows = order_rows(rows, sel.order, seed)
    dataset = {
        "name": source.name,
        "split": source.split,
        "fingerprint": source.fingerprint(),
        "rows": len(rows),
    }
    if sel.order != "sorted":
        dataset["order"] = f"{sel.order} (seed {seed})"
    if options:
        dataset["options"] = options
    if subset.selective:
        dataset["selection"] = rows_digest(source, rows)
    return source, rows, dataset


def dataset_record(source: ImageSource, rows: np.ndarray, dataset: dict) -> dict:
    """What a store's provenance says of its images: the key's part, where they were, and the
    classes (identifiers, readable names, and how many of the store's rows each holds)."""
    return {
        **dataset,
        "location": source.location,
        "classes": source.classes,
        "class_names": source.names(),
        "class_counts": source.class_counts(rows),
    }
