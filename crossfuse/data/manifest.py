"""The dataset contract: a folder with ``manifest.csv`` and the media it points to.

``manifest.csv`` columns:

=========  ========  ==========================================================
column     required  meaning
=========  ========  ==========================================================
``id``     yes       unique sample id (any string)
``label``  yes       class name
``split``  no        ``train`` / ``val`` / ``test``; hashed from ``id`` if absent
``image``  per run   path of an image file, relative to the dataset folder
``text``   per run   the text itself
=========  ========  ==========================================================

A run needs a column for every modality it encodes (``extract.encoders``).
Media paths must stay inside the dataset folder: absolute paths, ``..`` and
symlinks that leave it are rejected.

Example
-------
>>> m = load_manifest(Path("data"))          # doctest: +SKIP
>>> m.frame.columns.tolist()                  # doctest: +SKIP
['id', 'image', 'text', 'label']
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from crossfuse.config import RunConfig

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("id", "label")
SPLITS = ("train", "val", "test")
PATH_MODALITIES = frozenset({"image"})


class ManifestError(ValueError):
    """The manifest cannot be read as a crossfuse dataset; the message says how to fix it."""


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: ``frame`` holds the rows as strings, in file order.

    ``lines[i]`` is the 1-based line of ``manifest.csv`` where row ``i`` starts (a quoted
    newline makes a row span two lines). Bytes that were not valid UTF-8 read as U+FFFD
    in ``frame``; ``bad_utf8`` lists each such cell as (row, column, character, byte).
    """

    root: Path
    path: Path
    frame: pd.DataFrame
    lines: list[int] = field(default_factory=list)
    bad_utf8: list[tuple[int, str, int, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.name


def load_manifest(root: Path, modalities: list[str] | None = None,
                  extra_columns_file: str | None = None,
                  extra_targets: list[str] | None = None) -> Manifest:
    """Read ``root/manifest.csv`` with every cell as a string (empty = missing).

    Parameters
    ----------
    root: dataset folder.
    modalities: modality columns the run needs; each must be present.
    extra_columns_file: a CSV in ``root`` with an ``id`` column, left-joined on ``id``
        (ids it lacks get empty cells, which validation reports).
    extra_targets: more label columns the run needs (from either file).

    Raises
    ------
    ManifestError: missing folder/file or missing columns, with the fix in the message.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(f"dataset folder {root} does not exist; pass --data with a folder "
                            f"that holds {MANIFEST_NAME}")
    if not path.is_file():
        raise ManifestError(f"{path} not found: a dataset folder needs a {MANIFEST_NAME} with "
                            f"columns id,label and one column per modality (image,text)")
    # utf-8-sig drops a BOM; undecodable bytes become U+FFFD and are listed, so validation
    # can name their rows instead of the whole file failing.
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    try:
        # keep_default_na=False keeps "NA" as text and "" as missing.
        frame = pd.read_csv(io.StringIO(text, newline=""), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(f"{path} is empty: write a header row id,label,... and one row "
                            f"per sample") from exc
    frame.columns = [c.strip() for c in frame.columns]
    if frame.empty:
        raise ManifestError(f"{path} has a header but no rows: add one row per sample")
    lines = record_lines(text)
    if len(lines) != len(frame):  # cannot happen for a well-formed CSV; never guess lines
        lines = [i + 2 for i in range(len(frame))]
    if extra_columns_file:
        frame = _join_extra_columns(frame, root, extra_columns_file)
    needed = list(REQUIRED_COLUMNS) + list(modalities or []) + list(extra_targets or [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}. "
                            f"Rename or add them (required: id, label, and one per modality).")
    return Manifest(root=root.resolve(), path=path.resolve(), frame=frame, lines=lines,
                    bad_utf8=find_bad_utf8(raw))


def load_run_manifest(cfg: RunConfig) -> Manifest:
    """The run's dataset: manifest + extra columns, checked for the columns ``cfg`` needs."""
    return load_manifest(Path(cfg.data.path), cfg.modalities, cfg.data.extra_columns_file,
                         cfg.data.extra_targets)


def record_lines(text: str) -> list[int]:
    r"""The 1-based line where each data row starts (header and blank lines skipped).

    >>> record_lines('id,text\n1,"two\nlines"\n\n2,b\n')
    [2, 5]
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, previous = [], 0
    for row in reader:
        if row:
            starts.append(previous + 1)
        previous = reader.line_num
    return starts[1:]


def find_bad_utf8(raw: bytes) -> list[tuple[int, str, int, int]]:
    r"""Cells holding bytes that are not UTF-8: (data row, column, character offset, byte).

    >>> find_bad_utf8(b"id,text\n1,ok\n2,caf\xe9\n")
    [(1, 'text', 3, 233)]
    """
    try:
        raw.decode("utf-8-sig")
        return []
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    found = []
    for i, row in enumerate(rows[1:]):
        for column, value in zip(rows[0], row, strict=False):
            for at, ch in enumerate(value):
                if "\udc80" <= ch <= "\udcff":  # surrogateescape keeps byte b as U+DC00 + b
                    found.append((i, column.strip(), at, ord(ch) - 0xDC00))
                    break
    return found


def _join_extra_columns(frame: pd.DataFrame, root: Path, name: str) -> pd.DataFrame:
    path = resolve_media(root, name)
    if not path.is_file():
        raise ManifestError(f"data.extra_columns_file {path} not found")
    extra = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    if "id" not in extra.columns:
        raise ManifestError(f"{path} has no id column to join on; found {list(extra.columns)}")
    if extra["id"].duplicated().any():
        dup = extra.loc[extra["id"].duplicated(), "id"].iloc[0]
        raise ManifestError(f"{path}: id {dup!r} appears more than once; ids must be unique")
    extra = extra[["id"] + [c for c in extra.columns if c not in frame.columns]]
    return frame.merge(extra, on="id", how="left").fillna("")


def resolve_media(root: Path, relative: str) -> Path:
    """Resolve a media path from the manifest, refusing anything outside ``root``.

    >>> resolve_media(Path("/data/ds"), "images/a.png")        # doctest: +SKIP
    PosixPath('/data/ds/images/a.png')

    Raises
    ------
    ManifestError: the path is absolute or escapes ``root`` (``..`` or a symlink).
    """
    root = Path(root).resolve()
    if Path(relative).is_absolute():
        raise ManifestError(f"media path {relative!r} is absolute; write it relative to {root}")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise ManifestError(f"media path {relative!r} leaves the dataset folder {root}; "
                            f"keep media inside it")
    return resolved
