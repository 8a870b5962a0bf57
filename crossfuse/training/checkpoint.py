"""Training checkpoints: the whole loop state after every epoch, so a killed run resumes.

A checkpoint holds the head's and optimiser's state, the shuffling/dropout RNG states,
the best state so far, the early-stopping counters and the epoch history. It is
written atomically (a ``kill -9`` mid-write leaves the previous one intact) and
loaded with ``torch.load(weights_only=True)``; with ``storage.root`` set it is sent there
after every epoch, so a retry on another pod resumes too. Its file name is a key over what
determines training — the feature set's index (content hashes, splits, labels),
the encoders, the fusion and train config, the seed and the modalities — so a
rerun of the same training resumes, and anything else starts afresh.

Resuming from epoch k then training to the end gives the same weights as training
without interruption (same RNG states, same optimiser moments).

Example
-------
>>> key = checkpoint_key(fs, cfg.fusion, cfg.train, cfg.seed, ["image", "text"])   # doctest: +SKIP
>>> state = load_checkpoint(Path(".cache/crossfuse/checkpoints") / f"{key}.pt", key)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from crossfuse import storage
from crossfuse.atomic import atomic_path
from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.hashing import content_hash

log = logging.getLogger(__name__)


def checkpoint_key(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, seed: int,
                   modalities: list[str]) -> str:
    """A hex key naming one training: same data, config, seed and modalities, same key."""
    identity = {"index": content_hash(fs.index.to_json(orient="split")), "labels": fs.labels,
                "encoders": fs.encoders, "fusion": fusion.model_dump(),
                "train": train.model_dump(exclude={"checkpoint_dir"}), "seed": seed,
                "modalities": list(modalities)}
    return content_hash(json.dumps(identity, sort_keys=True, default=str))[:32]


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, lists and dicts of them) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    storage.push(path, replace=True)  # on a storage root, a retry on another pod resumes


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The state saved under ``key`` at ``path``, or None (absent, another training, unreadable)."""
    storage.pull(path)
    if not Path(path).is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a checkpoint from an older crossfuse or a damaged disk: start over
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if state.get("key") != key:
        return None
    return state
