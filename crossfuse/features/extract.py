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

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crossfuse.atomic import write_json
from crossfuse.config import RunConfig
from crossfuse.data.modalities import get_modality
from crossfuse.data.preprocess import read_samples
from crossfuse.encoders import Encoder, build_encoder, pad_tokens, place_encoder
from crossfuse.features.prefetch import prefetched
from crossfuse.features.store import (
    FeatureCache,
    concat_feature_sets,
    write_feature_set_files,
    write_shards,
)
from crossfuse.hashing import content_hash
from crossfuse.progress import progress

log = logging.getLogger(__name__)

RESULT_FILE = "extract_result.json"
BLOCK_SHARDS = 8  # rows encoded and written at a time: this many extract.shard_size shards


@dataclass(frozen=True)
class ExtractResult:
    n_samples: int
    dims: dict[str, int]
    cache_hits: dict[str, int]
    encoded: dict[str, int]
    truncated: dict[str, int] = field(default_factory=dict)  # items cut to the encoder's length
    runtime: dict[str, str] = field(default_factory=dict)  # e.g. "onnxruntime on cpu"
    seconds: dict[str, float] = field(default_factory=dict)  # spent encoding (cache misses)
    present: dict[str, int] = field(default_factory=dict)  # rows that have the modality


def _item_hashes(samples, modality: str, root: Path) -> list[str]:
    declared = get_modality(modality)
    if declared.media:  # from the shards' index: no media is read
        return declared.reader(root).hashes(samples[modality].tolist())
    return [content_hash(f"{modality}:" + t) for t in samples[modality]]


def _load_items(samples, modality: str, root: Path, rows: list[int]):
    """The items of ``rows``: texts, or media as one stacked array read from the mapped shards."""
    declared = get_modality(modality)
    cells = samples[modality].iloc[rows].tolist()
    return declared.reader(root).load(cells) if declared.media else cells


def encode_with_cache(encode: Callable[[list], dict[str, torch.Tensor]], label: str,
                      cache: FeatureCache, samples, hashes: list[str], modality: str, root: Path,
                      batch_size: int, shard_size: int, prepare: Callable = list,
                      workers: int = 0, pin_memory: bool = False
                      ) -> tuple[dict[str, torch.Tensor] | None, int, int]:
    """Encode every row of ``samples`` for ``modality``, through the cache.

    ``hashes`` are the rows' content hashes (:func:`_item_hashes`), computed once by the
    caller. ``encode(items)`` returns named tensors with one row per item. Missing items are
    encoded in batches and added to the cache one shard at a time, so an interrupted
    run keeps every completed shard. ``workers`` processes read the next batches and
    ``prepare`` them (a list of items -> what ``encode`` takes) while ``encode`` runs (0: no
    overlap). Texts are encoded shortest first, so a
    batch's texts have similar lengths and little padding. Returns (stacked tensors or None
    for no rows, rows served from the cache, distinct items encoded now).
    """
    todo: dict[str, int] = {}
    for row, h in enumerate(hashes):
        if h not in cache and h not in todo:
            todo[h] = row
    hits = sum(h in cache for h in hashes)
    pending = list(todo.items())
    if not get_modality(modality).media:
        pending.sort(key=lambda item: len(samples[modality].iloc[item[1]]))
    shards = [pending[s:s + shard_size] for s in range(0, len(pending), shard_size)]
    batches = [(shard, shard[b:b + batch_size], b + batch_size >= len(shard))
               for shard in shards for b in range(0, len(shard), batch_size)]

    def load(batch):
        return prepare(_load_items(samples, modality, root, [row for _, row in batch[1]]))

    with progress(total=len(pending), desc=f"encode {modality} ({label})", unit="item",
                  disable=not pending) as bar:
        parts: dict[str, list[torch.Tensor]] = {}
        loaded = prefetched(load, batches, workers, pin_memory)
        for (shard, chunk, shard_done), items in zip(batches, loaded, strict=True):
            for name, t in encode(items).items():
                parts.setdefault(name, []).append(t)
            bar.update(len(chunk))
            if shard_done:
                cache.put([h for h, _ in shard], {k: torch.cat(v) for k, v in parts.items()})
                parts = {}
    return (cache.get(hashes) if hashes else None), hits, len(pending)


def decode_workers(cfg: RunConfig, modality: str) -> int:
    """Processes that read and decode media ahead of the encoder (``extract.decode_workers``).

    None by default: measured, they did not pay. On 2 CPU cores a decoder only competes
    with ONNX Runtime for the cores; on a 16-core H100 machine 15 workers gave 710 images/s
    against 898 without (docs/performance.md). Set it where your measurement says otherwise.
    """
    return cfg.extract.decode_workers if get_modality(modality).media else 0


def batch_size(cfg: RunConfig, encoder: Encoder) -> int:
    """Items per forward pass: ``extract.batch_size``, or ``gpu_batch_size`` on a GPU."""
    return cfg.extract.gpu_batch_size if encoder.device.type == "cuda" else cfg.extract.batch_size


def _scatter(found: torch.Tensor | None, present, shape_tail: tuple[int, ...], dtype) -> torch.Tensor:
    """Rows of ``found`` into a zero tensor with one row per sample (absent rows stay zero)."""
    out = torch.zeros((len(present), *shape_tail), dtype=dtype)
    if found is not None:
        out[torch.tensor(present)] = found
    return out


@dataclass
class ModalityFeatures:
    """One modality's share of a feature set, rows aligned with the samples.

    ``vectors`` ``[N, dim]`` (zeros where absent); ``tokens`` ``([N, L, dim], [N, L])`` or None;
    ``present`` ``[N]`` bool; ``hashes`` the content hash of each present row, in order.
    """

    vectors: torch.Tensor
    tokens: tuple[torch.Tensor, torch.Tensor] | None
    present: np.ndarray
    hashes: list[str]
    cache_hits: int
    encoded: int
    truncated: int | None
    meta: dict
    seconds: float = 0.0


def onnx_dir(cfg: RunConfig) -> Path:
    """Where ONNX exports of the encoders are kept: beside the feature cache."""
    return Path(cfg.extract.cache_dir) / "onnx"


def build_encoders(cfg: RunConfig, preprocessed: Path | None = None) -> dict[str, Encoder]:
    """The run's encoders by modality (``extract.encoders``), on the CPU.

    A batch scored by a fine-tuned model brings the model's adapted encoders along in its
    preprocessed folder (:func:`carry_model_encoders`); those are used for their modalities.
    """
    carried = Path(preprocessed) / MODEL_ENCODERS_FILE if preprocessed is not None else None
    if carried is not None and carried.is_file():
        return model_encoders(cfg, Path(preprocessed), json.loads(carried.read_text()))
    return {m: build_encoder(name, m, offline=cfg.extract.hf_offline,
                             trust_remote_code=cfg.extract.trust_remote_code)
            for m, name in cfg.extract.encoders.items()}


MODEL_ENCODERS_FILE = "model_encoders.json"  # in a batch's preprocessed folder: the model's


def model_encoders(cfg: RunConfig, model_dir: Path, entries: dict[str, dict]) -> dict[str, Encoder]:
    """The encoders a saved model reads with (``entries``: its spec's ``encoders``), adapted
    ones (``fusion.finetune``) loaded from ``model_dir``."""
    from crossfuse.encoders.adapt import model_encoder

    return {m: model_encoder(e, m, model_dir, offline=cfg.extract.hf_offline,
                             trust_remote_code=cfg.extract.trust_remote_code)
            for m, e in entries.items()}


def is_finetuned(entries: dict[str, dict]) -> bool:
    """Whether a model's encoders (its spec's ``encoders``) include an adapted one.

    >>> is_finetuned({"text": {"name": "minilm"}}), is_finetuned({"text": {"adapted": {}}})
    (False, True)
    """
    return any("adapted" in e for e in entries.values())


def carry_model_encoders(model_dir: Path, preprocessed: Path) -> None:
    """Copy a fine-tuned model's adapted encoders into a batch's ``preprocessed`` folder, so
    its extract steps (which get that folder, not the model) encode as the model does."""
    import shutil

    from crossfuse.encoders.adapt import ADAPTED_DIR
    from crossfuse.fusion.model import SPEC_FILE

    entries = json.loads((Path(model_dir) / SPEC_FILE).read_text())["encoders"]
    if not is_finetuned(entries):
        return
    shutil.copytree(Path(model_dir) / ADAPTED_DIR, Path(preprocessed) / ADAPTED_DIR,
                    dirs_exist_ok=True)
    write_json(Path(preprocessed) / MODEL_ENCODERS_FILE, entries)


def _cache(caches: dict[str, FeatureCache], root: Path, key: str) -> FeatureCache:
    """The cache of ``key``, opened (its shards scanned) once per ``caches``."""
    if key not in caches:
        caches[key] = FeatureCache(root, key)
    return caches[key]


def extract_modality(cfg: RunConfig, encoder: Encoder, modality: str, samples: pd.DataFrame,
                     preprocessed: Path, caches: dict[str, FeatureCache] | None = None
                     ) -> ModalityFeatures:
    """Encode one modality of ``samples`` through the feature cache (and its token view).

    Rows without the modality get zero vectors; the fusion head never sees them
    (placeholder + mask). ``caches`` keeps the opened caches across calls.
    """
    caches = {} if caches is None else caches
    length, cache_dir = cfg.extract.max_tokens, Path(cfg.extract.cache_dir)
    started = time.perf_counter()
    present = (samples[modality] != "").to_numpy()
    have = samples[present].reset_index(drop=True)
    hashes = _item_hashes(have, modality, preprocessed)
    args = (have, hashes, modality, preprocessed, batch_size(cfg, encoder), cfg.extract.shard_size,
            encoder.prepare_batch, decode_workers(cfg, modality),
            encoder.device.type == "cuda")
    found, hits, encoded = encode_with_cache(
        lambda items: {"vectors": encoder.encode(items)}, encoder.name,
        _cache(caches, cache_dir, encoder.cache_key), *args)
    dim = found["vectors"].shape[1] if found else encoder.dim
    vectors = _scatter(found["vectors"] if found else None, present, (dim,), torch.float32)
    tokens = None
    if cfg.extract.token_sequences:
        seq, _, _ = encode_with_cache(
            lambda items: pad_tokens(*encoder.encode_tokens(items, length), length),
            f"{encoder.name} tokens", _cache(caches, cache_dir, f"{encoder.cache_key}:tokens{length}"),
            *args)
        tokens = (_scatter(seq["tokens"] if seq else None, present, (length, dim), torch.float32),
                  _scatter(seq["mask"] if seq else None, present, (length,), torch.bool))
    # Long texts are cut, not rejected: count them.
    truncated = None if get_modality(modality).media else encoder.count_truncated(
        have[modality].tolist())
    meta = {"name": encoder.name, "cache_key": encoder.cache_key, "dim": int(dim),
            "tokens": length if cfg.extract.token_sequences else 0,
            "device": str(encoder.device), "backend": encoder.backend}
    log.info("features %s: %d/%d from cache, %d encoded with %s on %s/%s (%d missing)", modality,
             hits, len(have), encoded, encoder.name, encoder.device, encoder.backend,
             len(samples) - len(have))
    return ModalityFeatures(vectors, tokens, present, hashes, hits, encoded, truncated, meta,
                            time.perf_counter() - started)


def feature_index(samples: pd.DataFrame, labels: list[str], targets: dict[str, list[str]]
                  ) -> pd.DataFrame:
    """The index's id, line, label, split and target columns, with class ids (``*_idx``)."""
    index = samples[["id", "line", "label", "split", *targets]].copy()
    index["label_idx"] = index["label"].map({name: i for i, name in enumerate(labels)})
    for target, classes in targets.items():
        index[f"{target}_idx"] = index[target].map({name: i for i, name in enumerate(classes)})
    return index


def extract(cfg: RunConfig, preprocessed: Path, out_dir: Path,
            encoders: dict[str, Encoder] | None = None,
            part: tuple[int, int] | None = None) -> ExtractResult:
    """Encode every modality of the preprocessed set at ``preprocessed`` into a feature set.

    With ``extract.token_sequences`` the token view of each encoder (up to
    ``extract.max_tokens`` per sample) is stored too, for cross-attention fusion.

    Parameters
    ----------
    cfg: run config (``extract`` section).
    preprocessed: output folder of :func:`crossfuse.data.preprocess.preprocess`.
    out_dir: where the feature set is written.
    encoders: prebuilt encoders by modality (default: built from ``extract.encoders``).
    part: ``(i, n)`` encodes only rows ``i, i + n, i + 2n, ...`` (one pod's share of a
        sharded extraction); :func:`merge_features` joins the parts.
    """
    preprocessed = Path(preprocessed)
    samples, labels, targets = read_samples(preprocessed)
    if part is not None:
        i, n = part
        if not 0 <= i < n:
            raise ValueError(f"part {i} of {n} does not exist; parts are 0..{n - 1}")
        samples = samples.iloc[i::n].reset_index(drop=True)
    encoders = encoders or build_encoders(cfg, preprocessed)
    for encoder in encoders.values():  # in place: a wrapped encoder stays wrapped
        place_encoder(encoder, cfg.extract.device, cfg.extract.backend, onnx_dir(cfg))
    index = feature_index(samples, labels, targets)
    block_rows = cfg.extract.shard_size * BLOCK_SHARDS
    caches: dict[str, FeatureCache] = {}
    done: dict[str, list[ModalityFeatures]] = {m: [] for m in cfg.modalities}
    for start in range(0, max(len(samples), 1), block_rows):
        # A block at a time: memory holds one block's vectors, whatever the row count.
        block = samples.iloc[start:start + block_rows].reset_index(drop=True)
        for m in cfg.modalities:
            f = extract_modality(cfg, encoders[m], m, block, preprocessed, caches)
            first = start // cfg.extract.shard_size
            write_shards(out_dir, m, "shard", {"vectors": f.vectors}, cfg.extract.shard_size, first)
            if f.tokens is not None:
                write_shards(out_dir, m, "tokens", {"tokens": f.tokens[0], "mask": f.tokens[1]},
                             cfg.extract.shard_size, first)
            done[m].append(dataclasses.replace(f, vectors=None, tokens=None))
    for m, blocks in done.items():
        index[f"present_{m}"] = np.concatenate([f.present for f in blocks])
        remaining = iter([h for f in blocks for h in f.hashes])
        index[f"hash_{m}"] = [next(remaining) if p else "" for p in index[f"present_{m}"]]
    meta = {m: blocks[0].meta for m, blocks in done.items()}
    write_feature_set_files(out_dir, index, labels, meta, targets)

    def total(attr: str) -> dict:
        return {m: sum(getattr(f, attr) for f in blocks) for m, blocks in done.items()}

    result = ExtractResult(n_samples=len(samples), dims={m: meta[m]["dim"] for m in meta},
                           cache_hits=total("cache_hits"), encoded=total("encoded"),
                           truncated={m: sum(f.truncated for f in blocks)
                                      for m, blocks in done.items()
                                      if blocks[0].truncated is not None},
                           runtime={m: f"{meta[m]['backend']} on {meta[m]['device']}" for m in meta},
                           seconds={m: round(v, 3) for m, v in total("seconds").items()},
                           present={m: int(sum(f.present.sum() for f in blocks))
                                    for m, blocks in done.items()})
    write_json(Path(out_dir) / RESULT_FILE, asdict(result))
    return result


def merge_features(cfg: RunConfig, parts: list[Path], out_dir: Path) -> ExtractResult:
    """Join the feature sets of a sharded extraction into one; counts are summed.

    >>> merge_features(cfg, [Path("part-0"), Path("part-1")], Path("features"))   # doctest: +SKIP
    ExtractResult(n_samples=720, ...)
    """
    concat_feature_sets(parts, out_dir, cfg.extract.shard_size)
    total = combined_result(parts)
    write_json(Path(out_dir) / RESULT_FILE, asdict(total))
    return total


def combined_result(parts: list[Path]) -> ExtractResult:
    """The :class:`ExtractResult` of a sharded extraction: the parts' counts summed."""
    results = [json.loads((Path(p) / RESULT_FILE).read_text()) for p in parts]
    return ExtractResult(
        n_samples=sum(r["n_samples"] for r in results), dims=results[0]["dims"],
        runtime=results[0].get("runtime", {}),
        **{k: {m: sum(r.get(k, {}).get(m, 0) for r in results) for m in results[0].get(k, {})}
           for k in ("cache_hits", "encoded", "truncated", "seconds", "present")})
