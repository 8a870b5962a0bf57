"""Content keys: which rows hold the same sample under different ids.

A row's key hashes what the model would see: for each modality column of the run, the
bytes of the media file (path modalities) or the normalised text; a missing cell counts
as missing. Two rows with one key are one sample twice. Validation reports such groups
when they span splits (leakage) or disagree on the label. Rows that share a media file
(the same picture under two captions) are not copies, but the model would still see the
picture in training and in test: :func:`sharing_groups` joins both kinds, and the split
keeps each group in one split.

Example
-------
>>> keys, media = row_keys(frame, root, ["image", "text"])     # doctest: +SKIP
>>> duplicate_groups(keys)                                      # doctest: +SKIP
[[3, 17]]
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from crossfuse.data.manifest import resolve_media
from crossfuse.data.modalities import get_modality
from crossfuse.data.text import normalise_text

MISSING = b"\x00missing"


def row_keys(frame: pd.DataFrame, root: Path, modalities: list[str]
             ) -> tuple[list[str | None], list[list[str]]]:
    """(content keys, media keys) of every row, each media file read once.

    A row's content key is one sha256 hex key over all its modalities; None for a row that
    is empty or whose media cannot be read (missing, outside the folder, unreadable:
    validation rejects those rows for their own reason). Its media keys name each media
    file it holds by its bytes (``image:<sha256>``), so rows that share a picture share a
    key whatever their other columns.
    """
    keys = [_row_keys(row, root, modalities) for _, row in frame.iterrows()]
    return [k for k, _ in keys], [m for _, m in keys]


def _row_keys(row: pd.Series, root: Path, modalities: list[str]) -> tuple[str | None, list[str]]:
    digest, has_content, unreadable, files = hashlib.sha256(), False, False, []
    for m in modalities:
        value = str(row.get(m, "") or "")
        if not value:
            part = hashlib.sha256(MISSING)
        elif get_modality(m).media:
            data = _file_bytes(root, value)
            if data is None:
                unreadable = True
                continue
            part = hashlib.sha256(data)
            files.append(f"{m}:{part.hexdigest()}")
        else:
            part = hashlib.sha256(normalise_text(value).encode("utf-8"))
        has_content |= bool(value)
        digest.update(m.encode() + b"\x00" + part.digest())
    return (digest.hexdigest() if has_content and not unreadable else None), files


def _file_bytes(root: Path, relative: str) -> bytes | None:
    try:
        return resolve_media(root, relative).read_bytes()
    except (OSError, ValueError, RuntimeError):  # missing, a folder, outside, a symlink loop
        return None


def sharing_groups(content: list[str | None], media: list[list[str]]) -> list[str | None]:
    """A group key per row: rows holding the same content, or sharing any media file, are
    one group (joined transitively); None for a row that shares nothing.

    The key is the smallest content or media key among the group's rows, so it does not
    depend on row order.

    >>> sharing_groups(["c1", "c2", "c3", "c1"], [["m1"], ["m1"], ["m3"], []])
    ['c1', 'c1', None, 'c1']
    """
    parent = list(range(len(content)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keys = [[*files, *([key] if key else [])] for key, files in zip(content, media, strict=True)]
    first: dict[str, int] = {}
    for row, found in enumerate(keys):
        for key in found:
            if key in first:
                parent[root(row)] = root(first[key])
            else:
                first[key] = row
    members: dict[int, list[int]] = {}
    for row in range(len(content)):
        members.setdefault(root(row), []).append(row)
    out: list[str | None] = [None] * len(content)
    for rows in members.values():
        if len(rows) > 1:
            smallest = min(k for r in rows for k in keys[r])
            for r in rows:
                out[r] = smallest
    return out


def duplicate_groups(keys: list[str | None]) -> list[list[int]]:
    """Row numbers sharing a key, groups of two or more, in row order.

    >>> duplicate_groups(["a", "b", "a", None, None, "b", "c"])
    [[0, 2], [1, 5]]
    """
    rows: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            rows.setdefault(key, []).append(i)
    return [group for group in rows.values() if len(group) > 1]
