"""A seeded visiting order of a store's rows that needs bounded memory (torch-free: part of the floor).

Rows are read in blocks (whole chunks, read contiguously); the blocks are visited in a permuted
order and grouped into windows of about `window_rows` usable rows, and the rows of each window
are permuted. When a window holds the whole store this is an i.i.d. shuffle; on a larger
class-sorted store a batch mixes as many classes as the window holds. The probe's training
stream and minibatch CKA both walk this order.
"""

from __future__ import annotations

import numpy as np


def shuffled_windows(
    n_rows: int, block_rows: int, rows_mask: np.ndarray, window_rows: int, rng: np.random.Generator
) -> list[tuple[list[int], np.ndarray]]:
    """[(blocks of the window, its usable rows as absolute row numbers in visiting order)].

    Every row with rows_mask set appears exactly once; a window covers whole blocks and holds
    at least window_rows usable rows (the last one may hold fewer)."""
    n_blocks = -(-n_rows // block_rows)
    order = rng.permutation(n_blocks)
    windows, current, rows = [], [], 0
    for block in order.tolist():
        current.append(block)
        rows += int(rows_mask[block * block_rows : min((block + 1) * block_rows, n_rows)].sum())
        if rows >= window_rows:
            windows.append(current)
            current, rows = [], 0
    if current:
        windows.append(current)
    plan = []
    for blocks in windows:
        members = np.concatenate(
            [
                np.flatnonzero(rows_mask[b * block_rows : min((b + 1) * block_rows, n_rows)]) + b * block_rows
                for b in blocks
            ]
        )
        plan.append((blocks, members[rng.permutation(len(members))]))
    return plan
