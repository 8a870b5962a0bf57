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

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from crossfuse.atomic import write_json
from crossfuse.config import RunConfig
from crossfuse.encoders import Encoder, build_encoder, resolve_device
from crossfuse.features.store import FeatureCache, content_hash, merge_feature_sets, write_feature_set
from crossfuse.data.preprocess import read_samples
from crossfuse.progress import progress

log = logging.getLogger(__name__)

RESULT_FILE = "extract_result.json"


@dataclass(frozen=True)
class ExtractResult:
    n_samples: int
    dims: dict[str, int]
    cache_hits: dict[str, int]
    encoded: dict[str, int]
    truncated: dict[str, int] = field(default_factory=dict)  # items cut to the encoder's length


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


def pad_tokens(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
    """Pad/cut ``[B, L, D]`` tokens and ``[B, L]`` mask to exactly ``length`` positions."""
    b, n, d = tokens.shape
    out = torch.zeros(b, length, d)
    keep = torch.zeros(b, length, dtype=torch.bool)
    out[:, :min(n, length)] = tokens[:, :length]
    keep[:, :min(n, length)] = mask[:, :length]
    return {"tokens": out, "mask": keep}


def encode_with_cache(encode: Callable[[list], dict[str, torch.Tensor]], label: str,
                      cache: FeatureCache, samples, hashes: list[str], modality: str, root: Path,
                      batch_size: int, shard_size: int
                      ) -> tuple[dict[str, torch.Tensor] | None, int, int]:
    """Encode every row of ``samples`` for ``modality``, through the cache.

    ``hashes`` are the rows' content hashes (:func:`_item_hashes`), computed once by the
    caller. ``encode(items)`` returns named tensors with one row per item. Missing items are
    encoded in batches and added to the cache one shard at a time, so an interrupted
    run keeps every completed shard. Returns (stacked tensors or None for no rows,
    rows served from the cache, distinct items encoded now).
    """
    todo: dict[str, int] = {}
    for row, h in enumerate(hashes):
        if h not in cache and h not in todo:
            todo[h] = row
    hits = sum(h in cache for h in hashes)
    pending = list(todo.items())
    with progress(total=len(pending), desc=f"encode {modality} ({label})", unit="item",
                  disable=not pending) as bar:
        for start in range(0, len(pending), shard_size):
            chunk = pending[start:start + shard_size]
            parts: dict[str, list[torch.Tensor]] = {}
            for b in range(0, len(chunk), batch_size):
                rows = [row for _, row in chunk[b:b + batch_size]]
                for name, t in encode(_load_items(samples, modality, root, rows)).items():
                    parts.setdefault(name, []).append(t)
                bar.update(len(rows))
            cache.put([h for h, _ in chunk], {k: torch.cat(v) for k, v in parts.items()})
    return (cache.get(hashes) if hashes else None), hits, len(pending)


def _scatter(found: torch.Tensor | None, present, shape_tail: tuple[int, ...], dtype) -> torch.Tensor:
    """Rows of ``found`` into a zero tensor with one row per sample (absent rows stay zero)."""
    out = torch.zeros((len(present), *shape_tail), dtype=dtype)
    if found is not None:
        out[torch.tensor(present)] = found
    return out


def extract(cfg: RunConfig, preprocessed: Path, out_dir: Path,
            encoders: dict[str, Encoder] | None = None,
            part: tuple[int, int] | None = None) -> ExtractResult:
    """Encode every modality of the preprocessed set at ``preprocessed`` into a feature set.

    With ``extract.token_sequences`` the token view of each encoder (up to
    ``extract.max_tokens`` per sample) is stored too, for cross-attention fusion.

    Parameters
    ----------
    cfg: run config (``extract`` section).
    preprocessed: output folder of :func:`crossfuse.preprocess.preprocess`.
    out_dir: where the feature set is written.
    encoders: prebuilt encoders by modality (default: built from ``extract.encoders``).
    part: ``(i, n)`` encodes only rows ``i, i + n, i + 2n, ...`` (one pod's share of a
        sharded extraction); :func:`crossfuse.features.merge_feature_sets` joins the parts.
    """
    preprocessed = Path(preprocessed)
    samples, labels, targets = read_samples(preprocessed)
    if part is not None:
        i, n = part
        if not 0 <= i < n:
            raise ValueError(f"part {i} of {n} does not exist; parts are 0..{n - 1}")
        samples = samples.iloc[i::n].reset_index(drop=True)
    encoders = encoders or {m: build_encoder(name, m, offline=cfg.extract.hf_offline,
                                             trust_remote_code=cfg.extract.trust_remote_code)
                            for m, name in cfg.extract.encoders.items()}
    device = resolve_device(cfg.extract.device)
    for encoder in encoders.values():
        encoder.to(device)
    index = samples[["id", "line", "label", "split", *targets]].copy()
    index["label_idx"] = index["label"].map({name: i for i, name in enumerate(labels)})
    for target, classes in targets.items():
        index[f"{target}_idx"] = index[target].map({name: i for i, name in enumerate(classes)})
    vectors, tokens, hits, encoded, meta, truncated = {}, {}, {}, {}, {}, {}
    length = cfg.extract.max_tokens
    for modality in cfg.modalities:
        encoder = encoders[modality]
        present = (samples[modality] != "").to_numpy()
        have = samples[present].reset_index(drop=True)
        hashes = _item_hashes(have, modality, preprocessed)  # reads each media file once
        args = (have, hashes, modality, preprocessed, cfg.extract.batch_size,
                cfg.extract.shard_size)
        cache = FeatureCache(Path(cfg.extract.cache_dir), encoder.cache_key)
        found, hits[modality], encoded[modality] = encode_with_cache(
            lambda items, e=encoder: {"vectors": e.encode(items)}, encoder.name, cache, *args)
        dim = found["vectors"].shape[1] if found else encoder.dim
        # Absent rows get zeros; the fusion head never sees them (placeholder + mask).
        vectors[modality] = _scatter(found["vectors"] if found else None, present, (dim,),
                                     torch.float32)
        if cfg.extract.token_sequences:
            token_cache = FeatureCache(Path(cfg.extract.cache_dir),
                                       f"{encoder.cache_key}:tokens{length}")
            seq, _, _ = encode_with_cache(
                lambda items, e=encoder: pad_tokens(*e.encode_tokens(items, length), length),
                f"{encoder.name} tokens", token_cache, *args)
            tokens[modality] = (
                _scatter(seq["tokens"] if seq else None, present, (length, dim), torch.float32),
                _scatter(seq["mask"] if seq else None, present, (length,), torch.bool))
        if modality == "text":  # long texts are cut, not rejected: count them
            truncated[modality] = encoder.count_truncated(have["text"].tolist())
        remaining = iter(hashes)
        index[f"present_{modality}"] = present
        index[f"hash_{modality}"] = [next(remaining) if p else "" for p in present]
        meta[modality] = {"name": encoder.name, "cache_key": encoder.cache_key, "dim": int(dim),
                          "tokens": length if cfg.extract.token_sequences else 0}
        log.info("features %s: %d/%d from cache, %d encoded with %s on %s (%d missing)", modality,
                 hits[modality], len(have), encoded[modality], encoder.name, device,
                 len(samples) - len(have))
    write_feature_set(out_dir, index, labels, meta, vectors, cfg.extract.shard_size, targets, tokens)
    result = ExtractResult(n_samples=len(samples), dims={m: v["dim"] for m, v in meta.items()},
                           cache_hits=hits, encoded=encoded, truncated=truncated)
    write_json(Path(out_dir) / RESULT_FILE, asdict(result))
    return result


def merge_parts(cfg: RunConfig, parts: list[Path], out_dir: Path) -> ExtractResult:
    """Join the feature sets of a sharded extraction into one; counts are summed.

    >>> merge_parts(cfg, [Path("part-0"), Path("part-1")], Path("features"))   # doctest: +SKIP
    ExtractResult(n_samples=720, ...)
    """
    merge_feature_sets(parts, out_dir, cfg.extract.shard_size)
    results = [json.loads((Path(p) / RESULT_FILE).read_text()) for p in parts]
    total = ExtractResult(
        n_samples=sum(r["n_samples"] for r in results), dims=results[0]["dims"],
        **{k: {m: sum(r[k].get(m, 0) for r in results) for m in results[0][k]}
           for k in ("cache_hits", "encoded", "truncated")})
    write_json(Path(out_dir) / RESULT_FILE, asdict(total))
    return total
