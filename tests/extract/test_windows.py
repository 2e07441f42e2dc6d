"""The floor's seeded row order: a permutation of the usable rows in bounded windows, i.i.d.
enough that batches on a class-sorted store mix classes."""

import numpy as np
import pytest

from extract.store.window_order import shuffled_windows


def test_every_usable_row_once_in_whole_block_windows():
    mask = np.ones(1000, bool)
    mask[::7] = False
    plan = shuffled_windows(1000, 64, mask, 200, np.random.default_rng(0))
    rows = np.concatenate([r for _, r in plan])
    assert np.array_equal(np.sort(rows), np.flatnonzero(mask))
    for blocks, r in plan:
        assert set((r // 64).tolist()) <= set(blocks)
    assert all(len(r) >= 200 for _, r in plan[:-1]) and len(plan) > 1
    again = shuffled_windows(1000, 64, mask, 200, np.random.default_rng(0))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plan, again))


def _distinct_classes_per_batch(labels, order, batch):
    return np.mean(
        [len(np.unique(labels[order[i : i + batch]])) for i in range(0, len(order) - batch + 1, batch)]
    )


@pytest.mark.parametrize("window, block_rows", [(10_000, 50), (5_000, 10)])
def test_batches_on_a_class_sorted_store_mix_classes_like_iid(window, block_rows):
    """100 classes x 100 rows, sorted by class: with a window of the whole store, or of half of
    it in blocks much smaller than a class, a batch of 64 holds at least 90% of the distinct
    classes an i.i.d. batch holds (read in store order: under 10%)."""
    labels = np.repeat(np.arange(100), 100)
    plan = shuffled_windows(
        len(labels), block_rows, np.ones(len(labels), bool), window, np.random.default_rng(1)
    )
    order = np.concatenate([r for _, r in plan])
    iid = _distinct_classes_per_batch(labels, np.random.default_rng(2).permutation(len(labels)), 64)
    ours = _distinct_classes_per_batch(labels, order, 64)
    sorted_order = _distinct_classes_per_batch(labels, np.arange(len(labels)), 64)
    assert ours >= 0.9 * iid and sorted_order < 0.1 * iid
