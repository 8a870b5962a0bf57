"""Efficiency of the trained model as evaluate measures it: size and latency from features.

- parameters of the fusion head (trained);
- latency from features to prediction (the head alone, median of repeated passes);
- the raw test requests (``serving_inputs.parquet``, ``evaluate.efficiency_samples`` rows as a
  client sends them) on which the register stage profiles the served model it promotes:
  load time, raw-input latency and peak memory of a fresh serving process
  (:mod:`crossfuse.registry.serving_profile`). That profile loads the encoders in a new
  process, seconds a model that is never served need not pay.

Example
-------
>>> inference_ms_per_sample(head, inputs)                              # doctest: +SKIP
0.004
"""

from __future__ import annotations

import statistics
import time

import torch

from crossfuse.features.store import SplitInputs
from crossfuse.fusion import FusionHead
from crossfuse.metrics import predict_split


def parameter_count(module: torch.nn.Module) -> int:
    """Number of weights in ``module``.

    >>> parameter_count(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters())


def inference_ms_per_sample(head: FusionHead, inputs: SplitInputs, repeats: int = 3) -> float:
    """Median wall time of scoring ``inputs`` (features -> probabilities), in ms per sample."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_split(head, inputs)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / max(len(inputs), 1)


def efficiency_metrics(head: FusionHead, features_ms: float) -> dict[str, float]:
    """Flat ``efficiency_*`` metrics for MLflow of the head (a serving profile adds its own:
    :func:`crossfuse.registry.serving_profile.profile_metrics`)."""
    return {"efficiency_head_parameters": float(parameter_count(head)),
            "efficiency_features_ms_per_sample": features_ms}
