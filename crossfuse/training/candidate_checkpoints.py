"""auto's checkpoints: each finished candidate is kept, so a killed or retried train resumes.

``fusion.method: auto`` cross-fits several candidates one after another; the train stage is
the longest of a run. Each finished candidate (its fold models, out-of-fold probabilities
and scores, or its screening verdict) is saved under ``train.checkpoint_dir`` (on
``storage.root`` when one is set: :mod:`crossfuse.storage`), and a rerun of the same
training loads it instead of fitting it again. Resumed candidates are the very objects an
uninterrupted run would have made, so the choice and the shipped model are the same.

The file name is a key over everything that determines the candidate: the feature set
(:func:`crossfuse.training.checkpoint.checkpoint_key`), the fusion and train settings, the
seed, the candidate's name and its racing threshold (set by the candidates before it) and
crossfuse's own code. Files are pickles that crossfuse itself wrote to the team's own
storage (``torch.save`` of the candidate); anything unreadable is fitted again.

Example
-------
>>> store = CandidateCheckpoints(cfg, fs)                     # doctest: +SKIP
>>> store.load("late", threshold=None) or store.save("late", None, fit_it())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from crossfuse import storage
from crossfuse.atomic import atomic_path
from crossfuse.config import RunConfig
from crossfuse.features.store import FeatureSet
from crossfuse.hashing import content_hash
from crossfuse.stage_records import code_fingerprint
from crossfuse.training.checkpoint import checkpoint_key

log = logging.getLogger(__name__)


class CandidateCheckpoints:
    """The finished candidates of one auto training, under ``<checkpoint_dir>/auto-<key>/``."""

    def __init__(self, cfg: RunConfig, fs: FeatureSet):
        key = checkpoint_key(fs, cfg.fusion, cfg.train, cfg.seed, fs.modalities)
        self.dir = Path(cfg.train.checkpoint_dir) / f"auto-{key}"
        self._code = code_fingerprint()
        self.resumed = 0

    def _path(self, name: str, threshold: float | None) -> Path:
        identity = json.dumps({"code": self._code, "name": name,
                               "threshold": None if threshold is None else repr(threshold)})
        safe = "".join(ch if ch.isalnum() else "-" for ch in name)
        return self.dir / f"{safe}-{content_hash(identity)[:16]}.pt"

    def load(self, name: str, threshold: float | None):
        """The candidate saved for ``name`` and ``threshold``, or None."""
        path = self._path(name, threshold)
        storage.pull(path)
        if not path.is_file():
            return None
        try:
            candidate = torch.load(path, weights_only=False)  # our own pickle, see the module
        except Exception as exc:  # a damaged file, or classes that changed shape: fit it again
            log.warning("ignoring unreadable candidate checkpoint %s: %s", path, exc)
            return None
        self.resumed += 1
        log.info("candidate %s resumed from its checkpoint %s", name, path)
        return candidate

    def save(self, name: str, threshold: float | None, candidate):
        """Keep ``candidate`` (atomically; sent to the storage root); returns it."""
        path = self._path(name, threshold)
        with atomic_path(path) as tmp:
            torch.save(candidate, tmp)
        storage.push(path)
        return candidate

    def clear(self) -> None:
        """Remove them all, here and on the storage root: the model is saved."""
        storage.remove(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
