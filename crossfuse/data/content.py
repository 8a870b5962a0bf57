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
>>> keys = content_keys(frame, root, ["image", "text"])        # doctest: +SKIP
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


def content_keys(frame: pd.DataFrame, root: Path, modalities: list[str]) -> list[str | None]:
    """One sha256 hex key per row; None for a row whose media cannot be read or that is empty.

    Media that cannot be read (missing, outside the folder, unreadable) give no key:
    validation rejects those rows for their own reason.
    """
    return [_row_key(row, root, modalities) for _, row in frame.iterrows()]


def _row_key(row: pd.Series, root: Path, modalities: list[str]) -> str | None:
    digest, has_content = hashlib.sha256(), False
    for m in modalities:
        value = str(row.get(m, "") or "")
        if not value:
            part = MISSING
        elif get_modality(m).media:
            part = _file_bytes(root, value)
            if part is None:
                return None
        else:
            part = normalise_text(value).encode("utf-8")
        has_content |= part is not MISSING
        digest.update(m.encode() + b"\x00" + hashlib.sha256(part).digest())
    return digest.hexdigest() if has_content else None


def _file_bytes(root: Path, relative: str) -> bytes | None:
    try:
        return resolve_media(root, relative).read_bytes()
    except (OSError, ValueError, RuntimeError):  # missing, a folder, outside, a symlink loop
        return None


def media_keys(frame: pd.DataFrame, root: Path, modalities: list[str]) -> list[list[str]]:
    """Per row, a key per media file it names (the file's bytes hashed with its modality):
    rows that share a picture (or recording) share a key, whatever their other columns."""
    media = [m for m in modalities if get_modality(m).media]
    keys = []
    for _, row in frame.iterrows():
        found = []
        for m in media:
            value = str(row.get(m, "") or "")
            data = _file_bytes(root, value) if value else None
            if data is not None:
                found.append(f"{m}:{hashlib.sha256(data).hexdigest()}")
        keys.append(found)
    return keys


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

    first: dict[str, int] = {}
    for row, keys in enumerate(media):
        for key in [*keys, *([content[row]] if content[row] else [])]:
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
            key = min(k for r in rows for k in [*media[r], *([content[r]] if content[r] else [])])
            for r in rows:
                out[r] = key
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
