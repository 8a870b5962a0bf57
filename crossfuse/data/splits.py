"""Which split each row belongs to: the manifest's ``split`` column, or a hash.

With a ``split`` column (any non-empty value), each row's value must be exactly
``train``, ``val`` or ``test``; anything else is reported by validation as that row's
problem (:func:`split_problem`). A column with train and test but no val (an official
train/test split) keeps its test rows and lends ``val / (train + val)`` of each class's
train rows to val (:func:`carve_validation`). Without one, splits are computed on the rows
validation kept, so a rejected row never takes a class's only val or test row with it.
Each row gets a key — its id, or for rows that hold the same content as another or share
a media file with it (:func:`crossfuse.data.content.sharing_groups`) their group's key,
so a duplicated sample or a shared picture cannot land in train and test at once —
hashed (sha256 of ``salt:key``) to a number in [0, 1). ``preprocess.split.strategy``
then decides:

- ``stratified`` (default): within each class, keys in hash order are cut by the
  fractions, with at least one in each split once a class has three keys. Small data
  needs it: with 10 rows of a class and 15% test, a per-row hash leaves the class out
  of test one time in five. Adding rows to a class can move that class's rows next to
  the cuts; a ``split`` column freezes splits for good.
- ``hash``: each key's own hash picks its split; adding rows never moves existing ones
  (unless a new row shares a picture or content with them: the group moves together),
  and each class is split in the configured proportions only in expectation.

Example
-------
>>> assign_split("s00001", SplitConfig())
'test'
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pandas as pd

from crossfuse.config import SplitConfig
from crossfuse.data.content import sharing_groups

SPLITS = ("train", "val", "test")


def hash_fraction(key: str) -> float:
    """Map a string to a float in [0, 1) via sha256 (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def assign_split(key: str, split: SplitConfig) -> str:
    """Pick ``train``/``val``/``test`` for a key (an id) from its hash and the split fractions."""
    u = hash_fraction(f"{split.salt}:{key}")
    if u < split.train:
        return "train"
    return "val" if u < split.train + split.val else "test"


def has_split_column(frame: pd.DataFrame) -> bool:
    """The manifest sets splits itself: a ``split`` column with at least one value."""
    return "split" in frame.columns and bool((frame["split"] != "").any())


def split_problem(value: str) -> str | None:
    """Why a ``split`` cell is not usable, or None.

    >>> split_problem("TEST")
    "split 'TEST' is not one of train, val, test (lowercase, exactly); did you mean 'test'?"
    """
    if value in SPLITS:
        return None
    if not value.strip():
        return ("split is empty while other rows set one; give every row train, val or test, "
                "or drop the split column to split by id hash")
    near = {"training": "train", "validation": "val", "valid": "val", "dev": "val",
            "testing": "test", "eval": "val"}.get(value.strip().lower(), value.strip().lower())
    hint = f"; did you mean {near!r}?" if near in SPLITS else ""
    return f"split {value!r} is not one of {', '.join(SPLITS)} (lowercase, exactly){hint}"


def row_splits(frame: pd.DataFrame, cfg: SplitConfig,
               groups: list[str | None] | None = None) -> list[str]:
    """Each row's split: the ``split`` column's value as written, or computed (see the module).

    ``frame`` holds the rows that are used (validation's rejects already left out, so a
    dropped row never takes a class's only val or test row with it). ``groups`` holds each
    row's sharing group (:func:`crossfuse.data.content.sharing_groups`): rows of one group
    are split together. Values of a ``split`` column are returned unchecked: see
    :func:`split_problem`.
    """
    keys = unit_keys(frame["id"].tolist(), groups)
    labels = frame["label"].tolist()
    if has_split_column(frame):
        given = frame["split"].tolist()
        if "val" in given or "train" not in given:
            return given
        return carve_validation(given, keys, labels, cfg)
    if cfg.strategy == "hash":
        return [assign_split(key, cfg) for key in keys]
    return stratified_splits(keys, labels, cfg)


def grouped_splits(frame: pd.DataFrame, cfg: SplitConfig, content: list[str | None],
                   media: list[list[str]]) -> list[str]:
    """:func:`row_splits` of the used rows ``frame``, rows that share content (``content``
    keys) or a media file (``media`` keys) split together. Validation and preprocess both
    call it on the rows validation kept, so they agree."""
    return row_splits(frame.reset_index(drop=True), cfg, sharing_groups(content, media))


def unit_keys(ids: list[str], groups: list[str | None] | None = None) -> list[str]:
    """The key each row is split by: its group's, else its id.

    >>> unit_keys(["a", "b", "c"], [None, "k", "k"])
    ['a', 'group:k', 'group:k']
    """
    groups = groups or [None] * len(ids)
    return [f"group:{g}" if g else i for i, g in zip(ids, groups, strict=True)]


def unit_labels(keys: list[str], labels: list[str]) -> dict[str, str]:
    """Each unit's class: its rows' most common label (ties: the first in sorted order), so
    a group whose rows disagree is still stratified as one unit.

    >>> unit_labels(["a", "g", "g", "g"], ["x", "y", "z", "z"])
    {'a': 'x', 'g': 'z'}
    """
    votes: dict[str, Counter] = {}
    for key, label in zip(keys, labels, strict=True):
        votes.setdefault(key, Counter())[label] += 1
    return {key: min(c, key=lambda label: (-c[label], label)) for key, c in votes.items()}


def carve_validation(splits: list[str], keys: list[str], labels: list[str],
                     cfg: SplitConfig) -> list[str]:
    """A ``split`` column with train and test but no val (an official train/test split):
    per class, the first ``val / (train + val)`` of its train units (rows sharing a key) in
    hash order become val.

    Test rows stay where the dataset put them, so scores compare with published ones.

    >>> carve_validation(["train"] * 6 + ["test"], [f"r{i}" for i in range(7)], ["a"] * 7,
    ...                  SplitConfig())
    ['train', 'train', 'train', 'train', 'val', 'train', 'test']
    """
    fraction = cfg.val / (cfg.train + cfg.val)
    in_train = [k for k, split in zip(keys, splits, strict=True) if split == "train"]
    of_unit = unit_labels(in_train, [lab for lab, split in zip(labels, splits, strict=True)
                                     if split == "train"])
    by_class: dict[str, list[str]] = {}
    for key, label in of_unit.items():
        by_class.setdefault(label, []).append(key)
    carved: set[str] = set()
    for units in by_class.values():
        if len(units) < 2:
            continue
        ordered = sorted(units, key=lambda k: (hash_fraction(f"{cfg.salt}:{k}"), k))
        carved.update(ordered[:max(1, round(fraction * len(units)))])
    return ["val" if split == "train" and key in carved else split
            for split, key in zip(splits, keys, strict=True)]


def stratified_splits(keys: list[str], labels: list[str], cfg: SplitConfig) -> list[str]:
    """Per class, distinct keys (units) in hash order cut into train / val / test by the
    fractions; every row gets its unit's split. A unit whose rows carry several labels
    counts for its most common one (:func:`unit_labels`).

    >>> stratified_splits([f"r{i}" for i in range(10)], ["a"] * 10, SplitConfig())
    ['train', 'train', 'test', 'train', 'train', 'test', 'val', 'train', 'val', 'train']
    """
    by_class: dict[str, list[str]] = {}
    for key, label in unit_labels(keys, labels).items():
        by_class.setdefault(label, []).append(key)
    split_of: dict[str, str] = {}
    for members in by_class.values():
        ordered = sorted(members, key=lambda k: (hash_fraction(f"{cfg.salt}:{k}"), k))
        n_val, n_test = _cuts(len(ordered), cfg)
        n_train = len(ordered) - n_val - n_test
        for at, key in enumerate(ordered):
            split_of[key] = ("train" if at < n_train else
                             "val" if at < n_train + n_val else "test")
    return [split_of[key] for key in keys]


def _cuts(n: int, cfg: SplitConfig) -> tuple[int, int]:
    """(val, test) sizes for a class of ``n`` keys: the fractions rounded, one each from 3 keys.

    >>> [_cuts(n, SplitConfig()) for n in (1, 2, 3, 10, 100)]
    [(0, 0), (0, 1), (1, 1), (2, 2), (15, 15)]
    """
    if n < 3:
        return 0, int(n == 2)
    n_val, n_test = max(1, round(cfg.val * n)), max(1, round(cfg.test * n))
    return n_val, n_test
