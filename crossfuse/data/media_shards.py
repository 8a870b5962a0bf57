"""Prepared media as model-ready arrays in shard files, read by memory map: decoded once.

Preprocessing decodes, resizes (images) or resamples (audio) every media file once and
appends the result to the modality's shard files; extraction, the raw-noise robustness
sweep, the served-model profile and batch scoring read those arrays back without decoding.
One layout for every media modality::

    <folder>/shard-00000.npy    [n, *shape] array, n <= SHARD_ITEMS: images uint8
                                [n, S, S, 3] (S = preprocess.image_size), audio float32 [n, L]
    <folder>/index.json         {"shape", "dtype", "hashes": {shard file: [item hash, ...]}}

A sample's cell in ``samples.parquet`` names its item as ``<folder>/shard-00000.npy#17``
(shard file and row). The item hashes (sha256 over dtype, shape and bytes) are computed
while writing, so a re-run finds its cached features without reading a pixel.

Folders written before this layout hold one file per item (``images/<h>.png``, cells without
``#``); :class:`MediaReader` reads those through the modality's own ``load`` and hashes
their file bytes, as then, so an old folder is read correctly, never misread as shards.

Each read opens the shard's memory map and drops it when done, so the pages a long scan
touched are not counted against the process after it moves on.

Example
-------
>>> import tempfile
>>> out = Path(tempfile.mkdtemp())
>>> writer = ShardWriter(out, "images", shard_items=2)
>>> cells = [writer.add(np.full((4, 4, 3), v, np.uint8)) for v in (1, 2, 3)]
>>> writer.close()
>>> cells
['images/shard-00000.npy#0', 'images/shard-00000.npy#1', 'images/shard-00001.npy#0']
>>> reader = MediaReader(out, load_file=None)
>>> reader.read(cells[1:]).shape, int(reader.read(cells[2:])[0, 0, 0, 0])
((2, 4, 4, 3), 3)
>>> reader.hashes(cells)[0] == item_hash(np.full((4, 4, 3), 1, np.uint8))
True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossfuse.atomic import atomic_path, write_json
from crossfuse.hashing import content_hash

SHARD_ITEMS = 1024  # items per shard file: 147 MB of 224 px images, 128 MB of 2 s audio at 16 kHz
INDEX_FILE = "index.json"
ROW_MARK = "#"


# Names how item_hash hashes media; records that keep hashes (a model's drift reference) store
# it, so hashes made another way (before: a preprocessed file's bytes) are never compared.
ITEM_HASH_SCHEME = "array-v1"


def item_hash(item: np.ndarray) -> str:
    """The content hash of one prepared item: its dtype, shape and bytes."""
    item = np.ascontiguousarray(item)
    return content_hash(f"{item.dtype.str}{item.shape}".encode() + item.tobytes())


def is_shard_cell(cell: str) -> bool:
    """Whether a media cell names a shard row (this layout) rather than one file (the old)."""
    return ROW_MARK in cell


def _parse(cell: str) -> tuple[str, int]:
    shard, _, row = cell.rpartition(ROW_MARK)
    return shard, int(row)


class ShardWriter:
    """Appends equally shaped arrays to ``out_dir/folder/shard-NNNNN.npy``; :meth:`close` writes
    the last shard and the index. Each shard file is written whole under a temporary name."""

    def __init__(self, out_dir: Path, folder: str, shard_items: int = SHARD_ITEMS):
        self.dir, self.folder, self.shard_items = Path(out_dir) / folder, folder, shard_items
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pending: list[np.ndarray] = []
        self.hashes: dict[str, list[str]] = {}
        self.shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None

    def _name(self) -> str:
        return f"shard-{len(self.hashes):05d}.npy"

    def add(self, item: np.ndarray) -> str:
        """Queue ``item``; its cell (``<folder>/shard-NNNNN.npy#row``)."""
        item = np.ascontiguousarray(item)
        if self.shape is None:
            self.shape, self.dtype = item.shape, item.dtype
        elif (item.shape, item.dtype) != (self.shape, self.dtype):
            raise ValueError(f"{self.folder}: item of {item.dtype} {item.shape} after "
                             f"{self.dtype} {self.shape}; one shape per modality")
        cell = f"{self.folder}/{self._name()}{ROW_MARK}{len(self.pending)}"
        self.pending.append(item)
        if len(self.pending) == self.shard_items:
            self._flush()
        return cell

    def _flush(self) -> None:
        if not self.pending:
            return
        name = self._name()
        with atomic_path(self.dir / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.stack(self.pending), allow_pickle=False)
        self.hashes[name] = [item_hash(item) for item in self.pending]
        self.pending = []

    def close(self) -> None:
        """Write the last shard and ``index.json`` (shape, dtype, every item's hash)."""
        self._flush()
        write_json(self.dir / INDEX_FILE, {
            "shape": list(self.shape or ()), "dtype": np.dtype(self.dtype or "uint8").str,
            "hashes": self.hashes}, indent=None)


class MediaReader:
    """Items of one media column of a preprocessed folder, in either layout.

    ``load_file(path)``: the modality's reader of one old-layout file (None: only shard cells
    are expected).
    """

    def __init__(self, root: Path, load_file: Callable[[Path], Any] | None):
        self.root, self.load_file = Path(root), load_file
        self._indexes: dict[str, dict] = {}

    def _index(self, shard: str) -> dict:
        folder = str(Path(shard).parent)
        if folder not in self._indexes:
            self._indexes[folder] = json.loads((self.root / folder / INDEX_FILE).read_text())
        return self._indexes[folder]

    def hashes(self, cells: Sequence[str]) -> list[str]:
        """Each cell's content hash: from the index for shard rows (no pixel is read), of the
        file's bytes for old-layout files."""
        out = []
        for cell in cells:
            if is_shard_cell(cell):
                shard, row = _parse(cell)
                out.append(self._index(shard)["hashes"][Path(shard).name][row])
            else:
                out.append(content_hash((self.root / cell).read_bytes()))
        return out

    def read(self, cells: Sequence[str]) -> np.ndarray:
        """Shard cells as one stacked array ``[len(cells), *shape]``, rows in the cells' order;
        each shard is mapped once per call and its rows copied out together."""
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for position, cell in enumerate(cells):
            shard, row = _parse(cell)
            by_shard.setdefault(shard, []).append((position, row))
        out = None
        for shard, wanted in by_shard.items():
            mapped = np.load(self.root / shard, mmap_mode="r", allow_pickle=False)
            if out is None:
                out = np.empty((len(cells), *mapped.shape[1:]), dtype=mapped.dtype)
            positions, rows = (np.asarray(v) for v in zip(*wanted, strict=True))
            out[positions] = mapped[rows]
            del mapped  # unmap now: a long scan does not keep every shard resident
        if out is None:
            raise ValueError("no cells to read")
        return out

    def load(self, cells: Sequence[str]) -> list | np.ndarray:
        """The items of ``cells``: a stacked array when every cell is a shard row (iterating it
        gives the items), else a list (old-layout files through ``load_file``)."""
        if cells and all(is_shard_cell(c) for c in cells):
            return self.read(cells)
        return [self.read([c])[0] if is_shard_cell(c) else self.load_file(self.root / c)
                for c in cells]
