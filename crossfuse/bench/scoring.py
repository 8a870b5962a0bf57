"""Batch scoring's memory and time against the batch's size (``crossfuse bench scoring``).

For each size, feature parts with the model's modalities and widths are written (seeded normal
vectors, every modality present, as the extract step lays them out), then
:func:`crossfuse.batch.score.score` runs on them in a fresh process, so each size's peak RSS is
its own. Flat peak memory across sizes is what "memory bounded regardless of row count" means.

Example
-------
>>> rows = [measure_scoring(Path("model"), n, Path("/tmp/w"), 1024) for n in (5000, 80000)]  # doctest: +SKIP
>>> [r["peak_rss_mb"] for r in rows]                                                       # doctest: +SKIP
[487.0, 526.0]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crossfuse.features.store import write_feature_set
from crossfuse.fusion.model import SPEC_FILE


def synthetic_parts(model_dir: Path, rows: int, out: Path, shard_size: int, parts: int = 2,
                    seed: int = 0) -> list[Path]:
    """``parts`` partial feature sets of ``rows`` rows in all (rows ``i::parts``), with the
    model's modalities and widths."""
    meta = json.loads((Path(model_dir) / SPEC_FILE).read_text())
    generator = torch.Generator().manual_seed(seed)
    index = pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "line": np.arange(2, rows + 2),
                          "label": "", "split": "score", "label_idx": np.nan,
                          **{f"present_{m}": True for m in meta["dims"]}})
    encoders = {m: {"name": m, "cache_key": f"synthetic-{m}", "dim": d}
                for m, d in meta["dims"].items()}
    folders = []
    for i in range(parts):
        n = len(range(i, rows, parts))
        vectors = {m: torch.randn(n, d, generator=generator) for m, d in meta["dims"].items()}
        folder = Path(out) / f"part-{i}"
        write_feature_set(folder, index.iloc[i::parts].reset_index(drop=True), meta["labels"],
                          encoders, vectors, shard_size)
        folders.append(folder)
    return folders


def measure_scoring(model_dir: Path, rows: int, work: Path, shard_size: int) -> dict:
    """Score ``rows`` synthetic rows with the model in a fresh process: rows, seconds, rows/s,
    peak RSS (MB)."""
    parts = synthetic_parts(model_dir, rows, Path(work) / f"rows-{rows}", shard_size)
    done = subprocess.run([sys.executable, "-m", "crossfuse.bench.scoring", str(model_dir),
                           str(shard_size), str(Path(work) / f"scored-{rows}"), *map(str, parts)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _score_here(model_dir: str, shard_size: str, out: str, *parts: str) -> None:
    import time

    from crossfuse.batch.score import score
    from crossfuse.tracking import peak_rss_mb

    started = time.perf_counter()
    result = score(Path(model_dir), [Path(p) for p in parts], Path(out), labelled=False,
                   shard_size=int(shard_size))
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": result.n_scored, "seconds": round(seconds, 2),
                      "rows_per_s": round(result.n_scored / seconds),
                      "peak_rss_mb": round(peak_rss_mb())}))


if __name__ == "__main__":
    _score_here(*sys.argv[1:])
