"""``crossfuse bench encoders``: how fast the run's encoders turn a dataset's items into vectors.

Items are prepared as the pipeline prepares them (normalised text, RGB images at
``preprocess.image_size``) and held in memory, so the timing covers the encoder
alone: its own tensor conversion, the network, and the copy back to the CPU. One
warm-up batch, then every item in batches of ``batch_size``, ``repeats`` times; the
median pass is reported. On a GPU the clock stops only after the device is done.

Example
-------
>>> rows = bench_encoders(cfg, device="auto", limit=256)    # doctest: +SKIP
>>> rows[0]["items_per_s"]                                   # doctest: +SKIP
812.4
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from crossfuse.config import RunConfig
from crossfuse.data.images import prepare_image
from crossfuse.data.manifest import load_run_manifest, resolve_media
from crossfuse.data.text import normalise_text
from crossfuse.encoders import Encoder, build_encoder, place_encoder, resolve_device


def dataset_items(cfg: RunConfig, limit: int) -> dict[str, list]:
    """The first ``limit`` non-empty items of each modality, prepared as in preprocessing."""
    frame = load_run_manifest(cfg).frame
    root = Path(cfg.data.path)
    items: dict[str, list] = {}
    for modality in cfg.modalities:
        values = [v for v in frame[modality].fillna("").astype(str) if v.strip()][:limit]
        if modality == "text":
            items[modality] = [normalise_text(v, cfg.preprocess.lowercase_text) for v in values]
        else:
            items[modality] = [prepare_image(resolve_media(root, v), cfg.preprocess.image_size)
                               for v in values]
    return items


def time_encoder(encoder: Encoder, items: list, batch_size: int, repeats: int = 3) -> float:
    """Median seconds to encode all ``items`` in batches (after one warm-up batch)."""

    def one_pass() -> float:
        start = time.perf_counter()
        for s in range(0, len(items), batch_size):
            encoder.encode(items[s:s + batch_size])
        if encoder.device.type == "cuda":
            torch.cuda.synchronize(encoder.device)
        return time.perf_counter() - start

    encoder.encode(items[:batch_size])
    return statistics.median(one_pass() for _ in range(repeats))


def bench_encoders(cfg: RunConfig, device: str = "auto", batch_size: int | None = None,
                   limit: int = 512, repeats: int = 3, backend: str | None = None) -> list[dict]:
    """One row per modality: encoder, device, backend, items, items per second, ms per item.

    ``backend`` defaults to ``extract.backend`` (auto: ONNX Runtime on the CPU where the
    encoder has an export).
    """
    where = resolve_device(device)
    batch_size = batch_size or cfg.extract.batch_size
    rows = []
    for modality, items in dataset_items(cfg, limit).items():
        encoder = build_encoder(cfg.extract.encoders[modality], modality,
                                offline=cfg.extract.hf_offline,
                                trust_remote_code=cfg.extract.trust_remote_code)
        place_encoder(encoder, str(where), backend or cfg.extract.backend)
        seconds = time_encoder(encoder, items, batch_size, repeats)
        rows.append({"modality": modality, "encoder": encoder.name, "device": str(where),
                     "backend": encoder.backend, "batch_size": batch_size, "items": len(items),
                     "items_per_s": round(len(items) / seconds, 1),
                     "ms_per_item": round(1000 * seconds / len(items), 3)})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table (the columns of :func:`bench_encoders`)."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
