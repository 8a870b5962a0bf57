"""Stratified, seeded fold assignment for cross-validation over train+val.

Within each class the rows are ordered by a hash of ``(seed, id)`` and dealt round-robin
into ``k`` folds, so every fold gets its share of every class (within one row), the same
data + seed always gives the same folds, and an id lands in exactly one fold.

Example
-------
>>> folds = stratified_folds(["a", "a", "a", "b", "b", "b"], ["1", "2", "3", "4", "5", "6"], k=3, seed=0)
>>> sorted(folds.tolist())
[0, 0, 1, 1, 2, 2]
"""

from __future__ import annotations

import hashlib

import numpy as np


def order_key(seed: int, sample_id: str) -> bytes:
    """The seeded hash order of a sample id (folds and subsamples both deal in it)."""
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()


def stratified_folds(labels, ids: list[str], k: int, seed: int) -> np.ndarray:
    """Fold number ``0..k-1`` of each row (``[N]`` ints), stratified by ``labels``.

    Parameters
    ----------
    labels: class of each row (any hashable values), ``N`` of them.
    ids: the rows' sample ids (unique); they, not the row order, decide the assignment.
    k: number of folds (>= 2).
    seed: changes the assignment; the same seed gives the same folds.
    """
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    labels, ids = list(labels), [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("fold assignment needs unique sample ids")
    folds = np.empty(len(ids), dtype=np.int64)
    offset = 0  # classes continue where the previous one stopped: folds stay equal in size
    for label in sorted(set(labels), key=str):
        rows = [i for i, lab in enumerate(labels) if lab == label]
        rows.sort(key=lambda i: order_key(seed, ids[i]))
        for rank, row in enumerate(rows):
            folds[row] = (offset + rank) % k
        offset += len(rows)
    return folds
