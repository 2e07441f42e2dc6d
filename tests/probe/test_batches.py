"""Batches on a store written in a shuffled row order mix classes like an i.i.d. sampler;
on a class-sorted store they do not (which is what makes the check discriminate)."""

import numpy as np
import pytest

from probe.bench.batches import distinct_per_batch, iid_distinct, label_store


@pytest.mark.slow
def test_a_shuffled_store_gives_near_iid_batches_and_a_class_sorted_one_does_not(tmp_path):
    classes, per_class, batch, window = 200, 60, 64, 2048  # a 2,048-row window of 64-row blocks
    sorted_labels = np.repeat(np.arange(classes), per_class)
    shuffled = sorted_labels[np.random.default_rng(0).permutation(len(sorted_labels))]
    iid = iid_distinct(classes, batch)
    on_sorted = distinct_per_batch(
        label_store(tmp_path / "a.zarr", sorted_labels, dim=16, shard_rows=64), batch, window
    )
    on_shuffled = distinct_per_batch(
        label_store(tmp_path / "b.zarr", shuffled, dim=16, shard_rows=64), batch, window
    )
    assert on_shuffled >= 0.9 * iid, (on_shuffled, iid)
    assert on_sorted < 0.9 * iid, (on_sorted, iid)


def test_the_iid_expectation_matches_a_simulation():
    rng = np.random.default_rng(1)
    simulated = np.mean([len(np.unique(rng.integers(0, 1000, 256))) for _ in range(2000)])
    assert abs(simulated - iid_distinct(1000, 256)) < 1.0
