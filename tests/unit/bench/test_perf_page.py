"""docs/performance.md: the measured part is rewritten between its markers; the goals are judged
from the numbers, never written by hand."""

from __future__ import annotations

from crossfuse.bench.perf import BEGIN, END, render, write_page


def costs(cold_wall, warm_wall, inproc_wall):
    stage = {"stage_validate_process_seconds": 10.0, "stage_evaluate_process_seconds": 30.0,
             "stage_train_process_seconds": 20.0, "stage_validate_peak_rss_mb": 400.0}
    return {"cold": {"wall": cold_wall, **stage},
            "warm": {"wall": warm_wall, **{k: v / 10 for k, v in stage.items()},
                     "stage_train_process_seconds": 12.0},
            "in_process": {"wall": inproc_wall, "stage_validate_seconds": 3.0}}


def results(cold=200.0, warm=40.0, inproc=160.0):
    return {"machine": "test CPU, 2 cores", "date": "2026-11-27", "command": "make bench-perf",
            "warm_change": "fusion.method=concat",
            "extraction": [
                {"modality": "image", "encoder": "e", "runtime": "torch on cpu", "items": 100,
                 "seconds": 2.0, "items_per_s": 50.0, "encoding_items_per_s": 55.0},
                {"modality": "image", "encoder": "e", "runtime": "onnxruntime on cpu",
                 "items": 100, "seconds": 0.5, "items_per_s": 200.0, "encoding_items_per_s": 210.0}],
            "costs": costs(cold, warm, inproc),
            "scaling": [{"rows": 1002, "wall": 60.0, "stage_train_process_seconds": 5.0,
                         "stage_train_peak_rss_mb": 900.0}]}


def test_goals_are_judged_from_the_measurements():
    page = render(results(), None)
    assert "200 img/s (4.0x PyTorch's 50) — **met**" in page
    assert "0.20 — **met**" in page                       # warm 40 s of a cold 200 s
    assert "1.25x — **met**" in page                       # 200 s vs 160 s in one process
    assert "slowest warm tasks are `train` (12.0 s) and `evaluate` (3.0 s) — **met**" in page
    assert "GPU extraction: no GPU in this run." in page
    slow = render(results(cold=100.0, warm=50.0, inproc=50.0), None)
    assert "0.50 — **not met**" in slow and "2.00x — **not met**" in slow


def test_the_prose_around_the_markers_is_kept(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\nWhy it is slow.\n\n{BEGIN}\nold numbers\n{END}\n\nMore prose.\n")
    write_page(page, render(results(), None))
    text = page.read_text()
    assert text.startswith("# Performance\n\nWhy it is slow.\n\n" + BEGIN)
    assert text.endswith(END + "\n\nMore prose.\n") and "old numbers" not in text
    assert "| validate | 10.0 | 1.0 | 0.10 | 3.0 | 400 |" in text
