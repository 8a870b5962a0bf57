"""Feature store: content-hash keyed vectors in safetensors shards, and feature sets.

Two things live here.

**The cache** (``extract.cache_dir``): one folder per encoder (named by a hash of
its ``cache_key``) holding shards ``<name>.safetensors``; each shard has named
tensors with ``n`` rows (``vectors`` ``[n, dim]``, or ``tokens`` ``[n, L, dim]`` +
``mask`` ``[n, L]``) and, in its metadata, the content hashes of its ``n`` items.
An item (a normalised text, a preprocessed image file) is encoded once per encoder,
whatever dataset or run it comes from. Shards are written to a temporary
name and renamed, so a reader never sees half a shard. With ``storage.root`` set the cache
lives there (:mod:`crossfuse.storage`): a cache opens by fetching the shards the task's disk
lacks, and each new shard is sent as soon as it is written.

**A feature set** (the extract stage's output, the train stage's input)::

    index.parquet                 id, line, label, label_idx, split, present_<m>, hash_<m>
    labels.json                   class names, index = label_idx
    targets.json                  {extra target: class names}, index = <target>_idx
    encoders.json                 {modality: {name, cache_key, dim}}
    <modality>/shard-00000.safetensors   tensor "vectors" [rows, dim], rows in index order
    <modality>/tokens-00000.safetensors  optional: "tokens" [rows, L, dim], "mask" [rows, L]

Example
-------
>>> fs = read_feature_set(Path("features"))          # doctest: +SKIP
>>> fs.vectors["text"].shape, fs.index.shape[0]      # doctest: +SKIP
(torch.Size([720, 384]), 720)
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open

from crossfuse import storage
from crossfuse.atomic import atomic_path, atomic_save, write_json
from crossfuse.errors import UserError
from crossfuse.hashing import content_hash

INDEX_FILE = "index.parquet"
ENCODERS_FILE = "encoders.json"
LABELS_FILE = "labels.json"
TARGETS_FILE = "targets.json"


class FeatureCache:
    """Vectors of one encoder, keyed by item content hash.

    Parameters
    ----------
    root: the cache folder (``extract.cache_dir``).
    cache_key: the encoder's ``cache_key``.
    """

    def __init__(self, root: Path, cache_key: str):
        self.dir = Path(root) / content_hash(cache_key)[:24]
        self.cache_key = cache_key
        self._where: dict[str, tuple[Path, int]] = {}
        self._scan()

    def _scan(self) -> None:
        storage.pull(self.dir)  # on a storage root: the shards this task's disk lacks
        if not self.dir.is_dir():
            return
        for shard in sorted(self.dir.glob("*.safetensors")):
            if shard.name.startswith("."):  # an unfinished write (a crash left it): never trusted
                continue
            with safe_open(str(shard), framework="pt") as f:
                hashes = json.loads((f.metadata() or {}).get("hashes", "[]"))
            for row, h in enumerate(hashes):
                self._where.setdefault(h, (shard, row))

    def __contains__(self, item_hash: str) -> bool:
        return item_hash in self._where

    def get(self, hashes: list[str]) -> dict[str, torch.Tensor]:
        """The cached tensors of ``hashes`` (all must be cached), stacked in order."""
        loaded: dict[Path, dict[str, torch.Tensor]] = {}
        for h in hashes:
            shard = self._where[h][0]
            if shard not in loaded:
                with safe_open(str(shard), framework="pt") as f:
                    loaded[shard] = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        names = loaded[self._where[hashes[0]][0]].keys()
        return {k: torch.stack([loaded[self._where[h][0]][k][self._where[h][1]] for h in hashes])
                for k in names}

    def put(self, hashes: list[str], tensors: dict[str, torch.Tensor]) -> None:
        """Add one shard: named tensors with ``len(hashes)`` rows each, written atomically."""
        path = self.dir / f"{uuid.uuid4().hex}.safetensors"
        atomic_save(tensors, path, metadata={"hashes": json.dumps(hashes),
                                             "cache_key": self.cache_key})
        storage.push(path)
        for row, h in enumerate(hashes):
            self._where.setdefault(h, (path, row))


Tokens = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {modality: ([N, L, D_m], [N, L] mask)}


@dataclass(frozen=True)
class SplitInputs:
    """One split's model inputs, row-aligned: what a fusion head reads and the labels it is scored on.

    ``vectors`` ``{m: [N, D_m]}``, ``present`` ``{m: BoolTensor[N]}``, ``labels`` ``LongTensor[N]``
    (primary target), ``tokens`` ``{m: ([N, L, D_m], [N, L])}`` or None when the head reads none.

    >>> s = SplitInputs({"text": torch.zeros(3, 2)}, {"text": torch.ones(3, dtype=torch.bool)},
    ...                 torch.tensor([0, 1, 0]))
    >>> len(s), len(s.select(torch.tensor([0, 2])))
    (3, 2)
    """

    vectors: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    labels: torch.Tensor
    tokens: Tokens | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, rows: torch.Tensor) -> SplitInputs:
        """The same inputs restricted to ``rows`` (a batch, a subsample)."""
        tokens = {m: (t[rows], k[rows]) for m, (t, k) in self.tokens.items()} if self.tokens else None
        return SplitInputs({m: v[rows] for m, v in self.vectors.items()},
                           {m: p[rows] for m, p in self.present.items()}, self.labels[rows], tokens)

    def replace(self, **changes) -> SplitInputs:
        """A copy with some fields replaced, e.g. ``present={**s.present, "text": ...}``."""
        return dataclasses.replace(self, **changes)


@dataclass
class FeatureSet:
    """A loaded feature set: the index frame, class names, and one ``[N, dim]`` tensor per modality."""

    index: pd.DataFrame
    labels: list[str]
    encoders: dict[str, dict]
    vectors: dict[str, torch.Tensor]
    targets: dict[str, list[str]] = field(default_factory=dict)
    tokens: Tokens = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return list(self.vectors)

    def present(self, modality: str) -> torch.Tensor:
        """Bool tensor ``[N]``: which rows have this modality."""
        return torch.tensor(self.index[f"present_{modality}"].to_numpy(), dtype=torch.bool)

    def rows(self, split: str) -> torch.Tensor:
        """Long tensor of the row numbers in ``split``."""
        return torch.tensor((self.index["split"] == split).to_numpy().nonzero()[0])

    def labels_of(self, target: str | None = None) -> torch.Tensor:
        """Long tensor ``[N]`` of class ids of the primary target, or of an extra target."""
        column = "label_idx" if target is None else f"{target}_idx"
        return torch.tensor(self.index[column].to_numpy(), dtype=torch.long)

    def split_tensors(self, split: str, modalities: list[str], target: str | None = None):
        """(vectors, present, class ids) of one split, restricted to ``modalities``.

        ``target`` None means the primary label; otherwise an extra target's name.
        """
        rows = self.rows(split)
        return ({m: self.vectors[m][rows] for m in modalities},
                {m: self.present(m)[rows] for m in modalities}, self.labels_of(target)[rows])

    def split_tokens(self, split: str, modalities: list[str], token_inputs: bool) -> Tokens | None:
        """Token sequences of one split when the head reads them (``token_inputs``), else None."""
        if not token_inputs:
            return None
        rows = self.rows(split)
        return {m: (self.tokens[m][0][rows], self.tokens[m][1][rows]) for m in modalities}

    def split_inputs(self, split: str, modalities: list[str], token_inputs: bool = False
                     ) -> SplitInputs:
        """Everything a head reads for ``split``, with the primary labels."""
        vectors, present, labels = self.split_tensors(split, modalities)
        return SplitInputs(vectors, present, labels, self.split_tokens(split, modalities, token_inputs))


def write_shards(out_dir: Path, modality: str, prefix: str, tensors: dict[str, torch.Tensor],
                 shard_size: int, first: int = 0) -> None:
    """Write ``tensors`` (same row count) as ``<modality>/<prefix>-<k>.safetensors`` shards of
    ``shard_size`` rows, numbered from ``first``; no rows still write one empty shard."""
    rows = len(next(iter(tensors.values())))
    for start in range(0, max(rows, 1), shard_size):
        atomic_save({k: t[start:start + shard_size] for k, t in tensors.items()},
                    Path(out_dir) / modality / f"{prefix}-{first + start // shard_size:05d}.safetensors")


def write_feature_set_files(out_dir: Path, index: pd.DataFrame, labels: list[str],
                            encoders: dict[str, dict], targets: dict[str, list[str]] | None = None
                            ) -> None:
    """A feature set's index and JSON files, beside shards already written; the index last,
    so a feature set without it is incomplete."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / LABELS_FILE, labels, indent=None)
    write_json(out_dir / ENCODERS_FILE, encoders)
    write_json(out_dir / TARGETS_FILE, targets or {}, indent=None)
    with atomic_path(out_dir / INDEX_FILE) as tmp:
        index.to_parquet(tmp, index=False)


def write_feature_set(out_dir: Path, index: pd.DataFrame, labels: list[str],
                      encoders: dict[str, dict], vectors: dict[str, torch.Tensor],
                      shard_size: int = 1024, targets: dict[str, list[str]] | None = None,
                      tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
    """Write a feature set; each modality's tensors are split into shards of ``shard_size`` rows."""
    for modality, matrix in vectors.items():
        write_shards(out_dir, modality, "shard", {"vectors": matrix}, shard_size)
    for modality, (seq, mask) in (tokens or {}).items():
        write_shards(out_dir, modality, "tokens", {"tokens": seq, "mask": mask}, shard_size)
    write_feature_set_files(out_dir, index, labels, encoders, targets)


def concat_feature_sets(parts: list[Path], out_dir: Path, shard_size: int = 1024) -> Path:
    """Join feature sets holding disjoint rows of one dataset, back in manifest order.

    The parts must come from the same encoders and labels (a sharded extraction);
    rows are ordered by ``line``, as a single extraction would write them.
    """
    sets = [read_feature_set(p) for p in parts]
    first = sets[0]
    for other, path in zip(sets[1:], parts[1:], strict=True):
        if other.encoders != first.encoders or other.labels != first.labels:
            raise UserError(f"feature set {path} was made with other encoders or labels than "
                            f"{parts[0]}; extract all parts with one config")
    index = pd.concat([s.index for s in sets], ignore_index=True)
    order = torch.from_numpy(index["line"].to_numpy().argsort(kind="stable"))
    vectors = {m: torch.cat([s.vectors[m] for s in sets])[order] for m in first.vectors}
    tokens = {m: (torch.cat([s.tokens[m][0] for s in sets])[order],
                  torch.cat([s.tokens[m][1] for s in sets])[order]) for m in first.tokens}
    index = index.iloc[order.numpy()].reset_index(drop=True)
    write_feature_set(out_dir, index, first.labels, first.encoders, vectors, shard_size,
                      first.targets, tokens)
    return Path(out_dir)


def read_feature_set(path: Path) -> FeatureSet:
    """Load a feature set written by :func:`write_feature_set`."""
    path = Path(path)
    encoders = json.loads((path / ENCODERS_FILE).read_text())
    vectors, tokens = {}, {}
    for modality in encoders:
        vectors[modality] = _read_shards(path / modality, "shard-*", ["vectors"])["vectors"]
        if any((path / modality).glob("tokens-*.safetensors")):
            both = _read_shards(path / modality, "tokens-*", ["tokens", "mask"])
            tokens[modality] = (both["tokens"], both["mask"])
    targets = path / TARGETS_FILE
    return FeatureSet(index=pd.read_parquet(path / INDEX_FILE),
                      labels=json.loads((path / LABELS_FILE).read_text()),
                      encoders=encoders, vectors=vectors,
                      targets=json.loads(targets.read_text()) if targets.is_file() else {},
                      tokens=tokens)


def _read_shards(folder: Path, pattern: str, names: list[str]) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for shard in sorted(folder.glob(pattern + ".safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for n in names:
                parts[n].append(f.get_tensor(n))
    return {n: torch.cat(p) for n, p in parts.items()}
