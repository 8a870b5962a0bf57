"""Efficiency of the trained model: size, latency per sample, peak memory to serve it.

- parameters of the fusion head (trained) and of each frozen encoder;
- latency from features to prediction (the head alone, median of repeated passes);
- latency from raw input to prediction (preprocess + encoders + head, as served),
  batched (ms per sample over a batch) and single-request (median of one-row calls);
- peak resident memory of a fresh process that loads the served model and predicts
  (:func:`crossfuse.tracking.peak_rss_mb`, the child's own high-water mark: the whole serving
  footprint, not the evaluating process's history),
  plus peak CUDA memory when a GPU is used.

The raw-input measurement runs in a child process (``python -m crossfuse.evaluation.efficiency``)
so its peak memory is the serving process's alone.

Example
-------
>>> inference_ms_per_sample(head, inputs)                              # doctest: +SKIP
0.004
>>> measure_serving(Path("model"), frame)["raw_ms_per_sample_batched"]  # doctest: +SKIP
31.2
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from crossfuse.features.store import SplitInputs
from crossfuse.fusion import FusionHead
from crossfuse.metrics import predict_split
from crossfuse.registry.serving import FusionPredictor
from crossfuse.tracking import peak_rss_mb


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


def serving_profile(model_dir: Path, frame: pd.DataFrame, single_requests: int = 8) -> dict:
    """Load the served model and time it on ``frame`` (raw inputs), in this process."""
    start = time.perf_counter()
    predictor = FusionPredictor(Path(model_dir))
    encoders = predictor.encoders  # as a server loads them: at load, not at the first request
    load_seconds = time.perf_counter() - start
    predictor.predict(frame.head(2))  # warm-up: first-call allocations and lazy init
    start = time.perf_counter()
    predictor.predict(frame)
    batched = (time.perf_counter() - start) / len(frame)
    singles = []
    for i in range(min(single_requests, len(frame))):
        start = time.perf_counter()
        predictor.predict(frame.iloc[[i]])
        singles.append(time.perf_counter() - start)
    profile = {"load_seconds": load_seconds, "raw_ms_per_sample_batched": 1000.0 * batched,
               "raw_latency_ms_single": 1000.0 * statistics.median(singles),
               "peak_rss_mb": peak_rss_mb(), "samples": len(frame),
               "encoder_parameters": {m: e.num_parameters() for m, e in encoders.items()}}
    if torch.cuda.is_available():
        profile["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return profile


def measure_serving(model_dir: Path, frame: pd.DataFrame, timeout: float = 900.0) -> dict:
    """:func:`serving_profile` in a fresh Python process, so peak memory is serving's alone.

    ``frame`` holds raw inputs as a client sends them (``text``; ``image`` as base64 bytes).
    """
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.parquet"
        frame.to_parquet(inputs, index=False)
        done = subprocess.run([sys.executable, "-m", "crossfuse.evaluation.efficiency", str(model_dir),
                               str(inputs)], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"measuring the served model failed (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def efficiency_metrics(head: FusionHead, features_ms: float, serving: dict) -> dict[str, float]:
    """Flat ``efficiency_*`` metrics for MLflow from the head and a serving profile."""
    out = {"efficiency_head_parameters": float(parameter_count(head)),
           "efficiency_features_ms_per_sample": features_ms}
    for m, n in serving.get("encoder_parameters", {}).items():
        out[f"efficiency_{m}_encoder_parameters"] = float(n)
    for key in ("raw_ms_per_sample_batched", "raw_latency_ms_single", "peak_rss_mb",
                "peak_cuda_mb", "load_seconds"):
        if key in serving:
            out[f"efficiency_{key}"] = float(serving[key])
    return out


if __name__ == "__main__":  # python -m crossfuse.evaluation.efficiency MODEL_DIR INPUTS.parquet
    print(json.dumps(serving_profile(Path(sys.argv[1]), pd.read_parquet(sys.argv[2]))))
