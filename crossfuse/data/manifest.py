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

import codecs
import csv
import dataclasses
import io
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from crossfuse.config import RunConfig
from crossfuse.errors import UserError

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("id", "label")


class ManifestError(UserError, ValueError):
    """The manifest cannot be read as a crossfuse dataset; the message says how to fix it."""


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: ``frame`` holds the rows as strings, in file order.

    ``lines[i]`` is the 1-based line of ``manifest.csv`` where row ``i`` starts (a quoted
    newline makes a row span two lines). Bytes that were not valid UTF-8 read as U+FFFD
    in ``frame``; ``bad_utf8`` lists each such cell as (row, column, character, byte).
    ``malformed`` lists rows whose field count differs from the header's, as (row, count).
    """

    root: Path
    path: Path
    frame: pd.DataFrame
    lines: list[int] = field(default_factory=list)
    bad_utf8: list[tuple[int, str, int, int]] = field(default_factory=list)
    malformed: list[tuple[int, int]] = field(default_factory=list)  # (row, fields it had)
    header: list[str] = field(default_factory=list)
    label_merges: dict[str, str] = field(default_factory=dict)  # variant -> label (label_case=fold)

    @property
    def name(self) -> str:
        return self.root.name


def load_manifest(root: Path, modalities: list[str] | None = None,
                  extra_columns_file: str | None = None,
                  extra_targets: list[str] | None = None,
                  labels_optional: bool = False) -> Manifest:
    """Read ``root/manifest.csv`` with every cell as a string (empty = missing).

    Ids, labels and extra target labels are trimmed and Unicode-normalised (NFC), so
    ``" cat"`` and ``"cat"`` are one label and two such ids are duplicates. A row with
    more or fewer fields than the header is kept (padded or cut to the header) and listed
    in ``malformed``, so validation rejects it by line instead of the whole file failing.

    Parameters
    ----------
    root: dataset folder.
    modalities: modality columns the run needs; each must be present.
    extra_columns_file: a CSV in ``root`` with an ``id`` column, left-joined on ``id``
        (ids it lacks get empty cells, which validation reports).
    extra_targets: more label columns the run needs (from either file).
    labels_optional: data to be scored, not trained on: without a ``label`` column every
        row reads as unlabelled (an empty label).

    Raises
    ------
    ManifestError: missing folder/file, a file that is not comma-separated UTF-8 text,
        a duplicated or missing column; the message names the cause and the fix.
    """
    path = require_dataset_folder(root)
    root = path.parent
    raw = path.read_bytes()
    check_encoding(path, raw)
    # utf-8-sig drops a BOM; undecodable bytes become U+FFFD and are listed, so validation
    # can name their rows instead of the whole file failing.
    text = raw.decode("utf-8-sig", errors="replace")
    header, records = read_records(path, text)
    frame = pd.DataFrame([r.cells for r in records], columns=header, dtype=str)
    lines = [r.line for r in records]
    malformed = [(i, r.fields) for i, r in enumerate(records) if r.fields != len(header)]
    if extra_columns_file:
        frame = _join_extra_columns(frame, root, extra_columns_file)
    found = [c for c in frame.columns if c != "label" or not labels_optional]
    if labels_optional and "label" not in frame.columns:
        frame["label"] = ""
    needed = list(REQUIRED_COLUMNS) + list(modalities or []) + list(extra_targets or [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        required = ("id and one per modality the model reads, empty where a row lacks it; a "
                    "label is optional" if labels_optional else "id, label, and one per modality")
        raise ManifestError(f"{path}: missing column(s) {missing}; found {found}. Rename or add "
                            f"them (required: {required}).")
    for column in ["id", "label", *(extra_targets or [])]:
        frame[column] = [canonical(v) for v in frame[column]]
    return Manifest(root=root.resolve(), path=path.resolve(), frame=frame, lines=lines,
                    bad_utf8=find_bad_utf8(raw), malformed=malformed, header=header)


def canonical(value: str) -> str:
    """An id or label as compared: Unicode NFC, surrounding whitespace removed.

    >>> canonical(" Cafe\u0301 ") == canonical("Café")
    True
    """
    return unicodedata.normalize("NFC", value).strip()


def check_encoding(path: Path, raw: bytes) -> None:
    """Refuse a manifest that is UTF-16/32 or binary, saying so (pandas would read mojibake)."""
    boms = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
            codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}
    found = next((name for bom, name in boms.items() if raw.startswith(bom)), None)
    head = raw[:4096]
    if found is None and head.count(0) > len(head) // 4:
        found = "UTF-16"  # ASCII text in UTF-16 without a BOM: every other byte is 0
    elif found is None and b"\x00" in head:
        found = "binary"
    if found == "binary":
        raise ManifestError(f"{path} holds NUL bytes: it is not a text CSV. Export the table "
                            f"as CSV (UTF-8, comma-separated)")
    if found:
        raise ManifestError(f"{path} looks like {found} text (by its byte order mark / NUL "
                            f"bytes): save it as UTF-8, e.g. `iconv -f {found} -t UTF-8`, or "
                            f"choose 'CSV UTF-8' when exporting")


class Record(NamedTuple):
    line: int  # where the row starts (a quoted newline makes a row span lines)
    cells: list[str]  # cut or padded to the header's width
    fields: int  # how many fields the row really had


def read_records(path: Path, text: str) -> tuple[list[str], list[Record]]:
    r"""(header, data rows). Blank lines are skipped.

    >>> read_records(Path("m.csv"), 'id,text\n1,"two\nlines"\n\n2,b,extra\n')[1]
    [Record(line=2, cells=['1', 'two\nlines'], fields=2), Record(line=5, cells=['2', 'b'], fields=3)]
    """
    rows = [(line, row) for line, row in _rows(path, text) if row]
    if not rows:
        raise ManifestError(f"{path} is empty: write a header row id,label,... and one row "
                            f"per sample")
    header = [c.strip() for c in rows[0][1]]
    _check_header(path, header)
    if len(rows) == 1:
        raise ManifestError(f"{path} has a header but no rows: add one row per sample")
    width = len(header)
    return header, [Record(line, (row + [""] * width)[:width], len(row)) for line, row in rows[1:]]


def _rows(path: Path, text: str):
    # csv's default limit (131,072 characters a field) would stop the whole file on one long
    # text; no field can be longer than the file, and validation rejects long texts by row.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=""))
    previous = 0
    try:
        for row in reader:
            yield previous + 1, row
            previous = reader.line_num
    except csv.Error as exc:
        raise ManifestError(f"{path} line {reader.line_num}: {exc}; check the quoting "
                            f"of that row (a quote inside a field is written twice: \"\")") from exc


def _check_header(path: Path, header: list[str]) -> None:
    if len(header) == 1:
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header[0]:
                raise ManifestError(
                    f"{path}: the header is one column {header[0]!r}; the file looks "
                    f"{name}-separated. manifest.csv must be comma-separated: re-export it "
                    f"as CSV with ',' as the delimiter")
    seen: dict[str, int] = {}
    for at, name in enumerate(header, start=1):
        if name in seen:
            raise ManifestError(f"{path}: column {name!r} appears twice in the header (columns "
                                f"{seen[name]} and {at}); rename or remove one, or its values "
                                f"would be ignored")
        seen[name] = at
    if "" in seen:
        raise ManifestError(f"{path}: header column {seen['']} has no name; name it or "
                            f"remove the trailing comma")


def require_dataset_folder(root: Path) -> Path:
    """The manifest of dataset folder ``root``; :class:`ManifestError` with the fix when the
    folder or its manifest is missing (or is not what it should be)."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.exists():
        raise ManifestError(f"dataset folder {root} does not exist; pass --data with a folder "
                            f"that holds {MANIFEST_NAME}")
    if not root.is_dir():
        raise ManifestError(f"--data {root} is a file, not a folder; pass the folder that holds "
                            f"{MANIFEST_NAME}")
    if path.is_dir():
        raise ManifestError(f"{path} is a folder, not a file: a dataset folder needs a "
                            f"{MANIFEST_NAME} file with columns id,label and one column per "
                            f"modality")
    if not path.is_file():
        raise ManifestError(f"{path} not found: a dataset folder needs a {MANIFEST_NAME} with "
                            f"columns id,label and one column per modality (image,text)")
    return path


def load_run_manifest(cfg: RunConfig, labels_optional: bool = False) -> Manifest:
    """The run's dataset: manifest + extra columns, checked for the columns ``cfg`` needs
    (``labels_optional``: data to score, see :func:`load_manifest`).

    With ``validation.label_case: fold`` labels that differ only by case are merged
    (:func:`fold_label_case`); the merges are kept in ``label_merges``.
    """
    manifest = load_manifest(Path(cfg.data.path), cfg.modalities, cfg.data.extra_columns_file,
                             cfg.data.extra_targets, labels_optional)
    if cfg.validation.label_case != "fold":
        return manifest
    merges = fold_label_case(manifest.frame["label"].tolist(), cfg.validation.labels)
    frame = manifest.frame.assign(label=manifest.frame["label"].replace(merges))
    return dataclasses.replace(manifest, frame=frame, label_merges=merges)


def case_variants(labels: list[str]) -> dict[str, list[str]]:
    """Labels that differ only by case, grouped: ``{casefolded: [variants, most common first]}``.

    >>> case_variants(["Cat", "cat", "cat", "dog", ""])
    {'cat': ['cat', 'Cat']}
    """
    counts = Counter(label for label in labels if label)
    groups: dict[str, list[str]] = {}
    for label in sorted(counts, key=lambda v: (-counts[v], v)):
        groups.setdefault(label.casefold(), []).append(label)
    return {k: v for k, v in groups.items() if len(v) > 1}


def fold_label_case(labels: list[str], declared: list[str] | None = None) -> dict[str, str]:
    """``{variant: label}`` merging case variants into the declared or most common spelling.

    >>> fold_label_case(["Cat", "cat", "cat", "CAT"])
    {'CAT': 'cat', 'Cat': 'cat'}
    """
    merges = {}
    for variants in case_variants(labels).values():
        keep = next((v for v in variants if declared and v in declared), variants[0])
        merges.update({v: keep for v in variants if v != keep})
    return merges


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
