"""Stratified, seeded, content-grouped fold assignment for cross-validation over train+val.

Rows that hold the same content (:func:`content_groups`: every modality's feature hash
equal, a missing modality counting as missing) form one group, and a group is dealt as a
unit: a sample copied under two ids can never be trained on in one fold and scored in
another. Within each class the groups are ordered by a hash of ``(seed, group key)`` and
dealt round-robin into ``k`` folds, so every fold gets its share of every class (within
one group), the same data + seed always gives the same folds, and a row without copies
is keyed by its id as before.

Example
-------
>>> folds = stratified_folds(["a", "a", "a", "b", "b", "b"], ["1", "2", "3", "4", "5", "6"], k=3, seed=0)
>>> sorted(folds.tolist())
[0, 0, 1, 1, 2, 2]
>>> folds = stratified_folds(["a"] * 4, ["1", "2", "3", "4"], k=2, seed=0, groups=["x", "x", "3", "4"])
>>> bool(folds[0] == folds[1])
True
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pandas as pd

MISSING = "missing"


def order_key(seed: int, sample_id: str) -> bytes:
    """The seeded hash order of a sample id (folds and subsamples both deal in it)."""
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()


def content_groups(index: pd.DataFrame) -> list[str]:
    """One group key per row of a feature index: its id, or ``content:<hash>`` for rows whose
    every modality has the same feature hash as another row's (copies under other ids).

    >>> index = pd.DataFrame({"id": ["a", "b", "c"], "present_text": [True, True, True],
    ...                       "hash_text": ["h1", "h2", "h1"]})
    >>> content_groups(index)[1], content_groups(index)[0] == content_groups(index)[2]
    ('b', True)
    """
    modalities = sorted(c[len("hash_"):] for c in index.columns if c.startswith("hash_"))
    parts = [np.where(index[f"present_{m}"].to_numpy(bool), index[f"hash_{m}"].astype(str), MISSING)
             for m in modalities]
    keys = ["|".join(cells) for cells in zip(*parts, strict=True)] if parts else []
    counts = Counter(keys)
    ids = index["id"].astype(str).tolist()
    return [f"content:{hashlib.sha256(k.encode()).hexdigest()[:32]}" if counts[k] > 1 else i
            for k, i in zip(keys, ids, strict=True)] if keys else ids


def stratified_folds(labels, ids: list[str], k: int, seed: int,
                     groups: list[str] | None = None) -> np.ndarray:
    """Fold number ``0..k-1`` of each row (``[N]`` ints), stratified by ``labels``.

    Parameters
    ----------
    labels: class of each row (any hashable values), ``N`` of them.
    ids: the rows' sample ids (unique); they, not the row order, decide the assignment.
    k: number of folds (>= 2).
    seed: changes the assignment; the same seed gives the same folds.
    groups: rows with one group key always share a fold (default: each id alone); a
        group's class, for stratification, is its most common label.
    """
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    labels, ids = list(labels), [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("fold assignment needs unique sample ids")
    groups = ids if groups is None else [str(g) for g in groups]
    members: dict[str, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)
    label_of = {g: Counter(labels[r] for r in rows).most_common(1)[0][0]
                for g, rows in members.items()}
    folds = np.empty(len(ids), dtype=np.int64)
    offset = 0  # classes continue where the previous one stopped: folds stay equal in size
    for label in sorted(set(label_of.values()), key=str):
        ordered = sorted((g for g, lab in label_of.items() if lab == label),
                         key=lambda g: order_key(seed, g))
        for rank, group in enumerate(ordered):
            folds[members[group]] = (offset + rank) % k
        offset += len(ordered)
    return folds
