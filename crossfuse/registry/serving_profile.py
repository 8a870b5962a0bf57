"""What serving the model costs: load time, raw-input latency and peak memory, measured once.

:func:`measure_serving` starts a fresh Python process that loads the served model as a
server would (:class:`crossfuse.registry.serving.FusionPredictor`, encoders included) and
answers raw requests: batched (ms per sample over the batch) and one row at a time
(median of single calls). The peak resident memory is that process's own high-water mark
(:func:`crossfuse.tracking.peak_rss_mb`), so it is serving's footprint alone; on a GPU, the
peak CUDA memory too.

The profile costs a process start and the encoders' load (seconds), and its answer depends
only on the model's files, the requests, crossfuse's code and the machine. So it is kept
under ``cache_dir`` by a hash of exactly those and read back when they recur; the register
stage profiles the model it promotes, the one that will be served
(``registry.serving_profile``).

Example
-------
>>> profile = measure_serving(Path("model"), requests, Path("profiles"))  # doctest: +SKIP
>>> profile["raw_ms_per_sample_batched"], profile["from_cache"]            # doctest: +SKIP
(31.2, False)
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from crossfuse import storage
from crossfuse.atomic import write_json

log = logging.getLogger(__name__)

SERVING_INPUTS_FILE = "serving_inputs.parquet"  # evaluate writes the requests to profile on
PROFILE_FILE = "serving_profile.json"  # the register stage logs the profile under evaluation/


def serving_profile(model_dir: Path, frame: pd.DataFrame, single_requests: int = 8) -> dict:
    """Load the served model and time it on ``frame`` (raw requests), in this process."""
    import torch

    from crossfuse.registry.serving import FusionPredictor
    from crossfuse.tracking import peak_rss_mb

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


def profile_key(model_dir: Path, frame: pd.DataFrame) -> str:
    """sha256 over the model folder's files (paths and bytes), the requests, crossfuse's
    source and the machine: what the profile's answer depends on."""
    from crossfuse.machine import machine  # the label of absolute times
    from crossfuse.stage_records import code_fingerprint

    h = hashlib.sha256(f"{code_fingerprint()}|{machine()}".encode())
    model_dir = Path(model_dir)
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(model_dir)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(pd.util.hash_pandas_object(frame.astype(str), index=True).values.tobytes())
    return h.hexdigest()


def measure_serving(model_dir: Path, frame: pd.DataFrame, cache_dir: Path | None = None,
                    timeout: float = 900.0) -> dict:
    """:func:`serving_profile` in a fresh Python process, or its earlier answer for the same
    model bytes and requests from ``cache_dir`` (``"from_cache"`` says which).

    ``frame`` holds raw inputs as a client sends them (``text``; media as base64 bytes).
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "serving-profiles" / f"{profile_key(model_dir, frame)[:32]}.json"
        if path.is_file() or storage.pull(path):
            return {**json.loads(path.read_text()), "from_cache": True}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.parquet"
        frame.to_parquet(inputs, index=False)
        done = subprocess.run([sys.executable, "-m", "crossfuse.registry.serving_profile",
                               str(model_dir), str(inputs)], capture_output=True, text=True,
                              timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"measuring the served model failed (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    profile = json.loads(done.stdout.strip().splitlines()[-1])
    if path is not None:
        write_json(path, profile)
        storage.push(path)
    return {**profile, "from_cache": False}


def profile_metrics(profile: dict) -> dict[str, float]:
    """Flat ``efficiency_*`` metrics of a serving profile (MLflow names).

    >>> profile_metrics({"peak_rss_mb": 900.0, "encoder_parameters": {"text": 22}, "samples": 8})
    {'efficiency_text_encoder_parameters': 22.0, 'efficiency_peak_rss_mb': 900.0}
    """
    out = {f"efficiency_{m}_encoder_parameters": float(n)
           for m, n in profile.get("encoder_parameters", {}).items()}
    for key in ("raw_ms_per_sample_batched", "raw_latency_ms_single", "peak_rss_mb",
                "peak_cuda_mb", "load_seconds"):
        if key in profile:
            out[f"efficiency_{key}"] = float(profile[key])
    return out


def served_line(profile: dict) -> str:
    """The profile in words, for the console.

    >>> served_line({"load_seconds": 2.04, "raw_ms_per_sample_batched": 31.2,
    ...              "raw_latency_ms_single": 40.0, "peak_rss_mb": 912.3, "from_cache": True})
    'loads in 2.0 s, 31.2 ms a request in a batch, 40.0 ms alone, 912 MB peak (profile reused)'
    """
    return (f"loads in {profile['load_seconds']:.1f} s, "
            f"{profile['raw_ms_per_sample_batched']:.1f} ms a request in a batch, "
            f"{profile['raw_latency_ms_single']:.1f} ms alone, {profile['peak_rss_mb']:.0f} MB peak"
            + (" (profile reused)" if profile.get("from_cache") else ""))


if __name__ == "__main__":  # python -m crossfuse.registry.serving_profile MODEL_DIR INPUTS.parquet
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(serving_profile(Path(sys.argv[1]), pd.read_parquet(sys.argv[2]))))
