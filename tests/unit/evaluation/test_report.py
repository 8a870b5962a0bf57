"""The report leads with the answer and shows what a reviewer checks, escaped."""

import base64
import io
import json

import pandas as pd
from PIL import Image

from crossfuse.evaluation.examples import misclassified_rows
from crossfuse.evaluation.report import render_report


def evaluation_folder(tmp_path, gain: float):
    metrics = {"test_macro_f1": 0.75, "test_accuracy": 0.8, "test_samples": 149.0,
               "baseline_text_test_macro_f1": 0.75 - gain, "baseline_image_test_macro_f1": 0.5,
               "fusion_gain_macro_f1": gain, "test_ece": 0.1, "test_ece_calibrated": 0.05}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def order_of(page: str, *markers: str) -> list[int]:
    return [page.index(m) for m in markers]


def test_a_fusion_that_lost_says_so_in_red_before_any_table(tmp_path):
    folder = evaluation_folder(tmp_path, gain=-0.0893)
    decision = {"decision": "not promoted", "model_name": "m", "version": "3",
                "champion_version": "2", "reason": "fusion lost to one modality alone", "checks": []}
    page = render_report(folder, {"dataset": "d", "git.commit": "abc"}, decision).read_text()
    positions = order_of(page, "Not promoted: m v3 is the challenger; the champion stays v2.",
                         "fusion LOST 0.0893 to text alone", "<h2>Test metrics</h2>",
                         "<h2>Promotion</h2>", "<h2>Run</h2>")
    assert positions == sorted(positions)
    assert '<p class="bad"><b>Test macro-F1 0.7500; text alone 0.8393' in page
    assert "<td>149</td>" in page and "149.0000" not in page  # counts are whole numbers
    assert "crossfuse&#39;s git commit" in page  # where the code version came from


def test_a_gain_is_green_and_a_report_before_registration_says_it_is_pending(tmp_path):
    page = render_report(evaluation_folder(tmp_path, gain=0.05), {"dataset": "d"}).read_text()
    assert "not registered yet" in page
    assert '<p class="good"><b>Test macro-F1 0.7500; text alone 0.7000: fusion gained +0.0500' in page


def test_misclassified_examples_show_the_picture_the_text_and_the_confidence_escaped(tmp_path):
    Image.new("RGB", (300, 200), "red").save(tmp_path / "a.png")
    predictions = pd.DataFrame({"id": ["a", "b", "c"], "label": ["x", "y", "x"],
                                "predicted": ["y", "y", "y"], "p_x": [0.3, 0.1, 0.05],
                                "p_y": [0.7, 0.9, 0.95]})
    samples = pd.DataFrame({"id": ["a", "b", "c"], "image": ["a.png", "a.png", ""],
                            "text": ["<script>alert(1)</script>", "fine", None]})
    rows = misclassified_rows(predictions, samples, tmp_path, limit=5)
    assert [r["id"] for r in rows] == ["c", "a"]  # wrong ones only, most confident first
    assert rows[1]["confidence"] == 0.7 and rows[1]["thumbnail"] and not rows[0]["thumbnail"]
    folder = evaluation_folder(tmp_path, gain=0.0)
    (folder / "misclassified.json").write_text(json.dumps(rows))
    page = render_report(folder, {"dataset": "d"}).read_text()
    assert "<h2>Misclassified examples</h2>" in page and "predicted <b>y</b> (70%)" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    thumbnail = Image.open(io.BytesIO(base64.b64decode(rows[1]["thumbnail"])))
    assert max(thumbnail.size) == 96
