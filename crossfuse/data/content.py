"""Content keys: which rows hold the same sample under different ids.

A row's key hashes what the model would see: for each modality column of the run, the
bytes of the media file (path modalities) or the normalised text; a missing cell counts
as missing. Two rows with one key are one sample twice. Validation reports such groups
when they span splits (leakage) or disagree on the label; the hash split keeps each
group in one split.

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
