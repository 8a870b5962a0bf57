"""`crossfuse bench scoring` measures a fresh process per size, and that process's own peak."""

from __future__ import annotations

import subprocess
import sys

from crossfuse.bench.scoring import measure_scoring
from crossfuse.fusion import FusionSpec, build_fusion_head, save_fusion_head
from crossfuse.tracking import peak_rss_mb


def test_scoring_is_measured_on_every_row_of_synthetic_parts(tmp_path):
    head = build_fusion_head(FusionSpec("concat", {"image": 6, "text": 4}, 3, hidden_dim=8))
    save_fusion_head(head, tmp_path / "model", extra={"labels": ["a", "b", "c"]})
    result = measure_scoring(tmp_path / "model", 300, tmp_path / "work", shard_size=64)
    assert result["rows"] == 300 and result["rows_per_s"] > 0 and result["peak_rss_mb"] > 10


def test_a_child_process_reports_its_own_peak_memory_not_its_parents():
    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])     # touch every page: 600 MB resident
    parent = peak_rss_mb()
    child = subprocess.run([sys.executable, "-c", "from crossfuse.tracking import peak_rss_mb; "
                            "print(peak_rss_mb())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < parent - 400, (float(child.stdout), parent)
    del ballast
