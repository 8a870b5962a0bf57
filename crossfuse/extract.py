"""Stage 3, extract: run each modality's frozen encoder over the preprocessed samples.

Items already in the feature cache (same content, same encoder) are not encoded
again; the result says how many were hits. Encoding is batched, under
``torch.inference_mode``, with a progress bar.

Example
-------
>>> r = extract(cfg, Path("preprocessed"), Path("features"))     # doctest: +SKIP
>>> r.cache_hits, r.encoded                                      # doctest: +SKIP
({'image': 720, 'text': 720}, {'image': 0, 'text': 0})
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from crossfuse.config import RunConfig
from crossfuse.encoders import Encoder, build_encoder
from crossfuse.features import FeatureCache, content_hash, write_feature_set
from crossfuse.preprocess import read_samples
from crossfuse.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    n_samples: int
    dims: dict[str, int]
    cache_hits: dict[str, int]
    encoded: dict[str, int]


def _item_hashes(samples, modality: str, root: Path) -> list[str]:
    if modality == "text":
        return [content_hash("text:" + t) for t in samples["text"]]
    return [content_hash((root / p).read_bytes()) for p in samples["image"]]


def _load_items(samples, modality: str, root: Path, rows: list[int]) -> list:
    if modality == "text":
        return [samples["text"].iloc[r] for r in rows]
    items = []
    for r in rows:
        with Image.open(root / samples["image"].iloc[r]) as img:
            items.append(img.convert("RGB"))
    return items


def encode_with_cache(encoder: Encoder, cache: FeatureCache, samples, root: Path,
                      batch_size: int, shard_size: int) -> tuple[torch.Tensor, int, int]:
    """Vectors ``[len(samples), dim]`` for ``encoder.modality``.

    Returns (vectors, rows served from the cache, distinct items encoded now).

    Missing items are encoded in batches and added to the cache one shard at a time,
    so an interrupted run keeps every completed shard.
    """
    modality = encoder.modality
    hashes = _item_hashes(samples, modality, root)
    todo: dict[str, int] = {}
    for row, h in enumerate(hashes):
        if h not in cache and h not in todo:
            todo[h] = row
    hits = sum(h in cache for h in hashes)
    pending = list(todo.items())
    with progress(total=len(pending), desc=f"encode {modality} ({encoder.name})", unit="item",
              disable=not pending) as bar:
        for start in range(0, len(pending), shard_size):
            chunk = pending[start:start + shard_size]
            parts = []
            for b in range(0, len(chunk), batch_size):
                rows = [row for _, row in chunk[b:b + batch_size]]
                parts.append(encoder.encode(_load_items(samples, modality, root, rows)))
                bar.update(len(rows))
            cache.put([h for h, _ in chunk], torch.cat(parts))
    vectors = cache.get(hashes) if hashes else torch.empty(0, encoder.dim)
    return vectors, hits, len(pending)


def extract(cfg: RunConfig, preprocessed: Path, out_dir: Path,
            encoders: dict[str, Encoder] | None = None) -> ExtractResult:
    """Encode every modality of the preprocessed set at ``preprocessed`` into a feature set.

    Parameters
    ----------
    cfg: run config (``extract`` section).
    preprocessed: output folder of :func:`crossfuse.preprocess.preprocess`.
    out_dir: where the feature set is written.
    encoders: prebuilt encoders by modality (default: built from ``extract.encoders``).
    """
    preprocessed = Path(preprocessed)
    samples, labels, targets = read_samples(preprocessed)
    encoders = encoders or {m: build_encoder(name, m, offline=cfg.extract.hf_offline)
                            for m, name in cfg.extract.encoders.items()}
    index = samples[["id", "line", "label", "split", *targets]].copy()
    index["label_idx"] = index["label"].map({name: i for i, name in enumerate(labels)})
    for target, classes in targets.items():
        index[f"{target}_idx"] = index[target].map({name: i for i, name in enumerate(classes)})
    vectors, hits, encoded, meta = {}, {}, {}, {}
    for modality in cfg.modalities:
        encoder = encoders[modality]
        cache = FeatureCache(Path(cfg.extract.cache_dir), encoder.cache_key)
        present = (samples[modality] != "").to_numpy()
        have = samples[present].reset_index(drop=True)
        found, hits[modality], encoded[modality] = encode_with_cache(
            encoder, cache, have, preprocessed, cfg.extract.batch_size, cfg.extract.shard_size)
        # Absent rows get zeros; the fusion head never sees them (placeholder + mask).
        matrix = torch.zeros(len(samples), found.shape[1] if len(have) else encoder.dim)
        if len(have):
            matrix[torch.tensor(present)] = found
        vectors[modality] = matrix
        hashes = iter(_item_hashes(have, modality, preprocessed))
        index[f"present_{modality}"] = present
        index[f"hash_{modality}"] = [next(hashes) if p else "" for p in present]
        meta[modality] = {"name": encoder.name, "cache_key": encoder.cache_key,
                          "dim": int(matrix.shape[1])}
        log.info("features %s: %d/%d from cache, %d encoded with %s (%d missing)", modality,
                 hits[modality], len(have), encoded[modality], encoder.name, len(samples) - len(have))
    write_feature_set(out_dir, index, labels, meta, vectors, cfg.extract.shard_size, targets)
    return ExtractResult(n_samples=len(samples), dims={m: v["dim"] for m, v in meta.items()},
                         cache_hits=hits, encoded=encoded)
