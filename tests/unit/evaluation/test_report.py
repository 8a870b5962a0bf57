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
                         "text alone 0.8393: fusion LOST 0.0893 to it", "<h2>Test metrics</h2>",
                         "<h2>Promotion</h2>", "<h2>Run</h2>")
    assert positions == sorted(positions)
    assert '<p class="bad"><b>Test macro-F1 0.7500; text alone 0.8393' in page
    assert '<td class="num">149</td>' in page and "149.0000" not in page  # whole numbers
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


def test_the_report_says_whether_to_trust_it_data_intervals_and_the_rule(tmp_path):
    folder = evaluation_folder(tmp_path, gain=0.0103)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update({"test_macro_f1_ci_low": 0.68, "test_macro_f1_ci_high": 0.81,
                    "fusion_gain_macro_f1_ci_low": -0.031, "fusion_gain_macro_f1_ci_high": 0.052,
                    "present_image_test_macro_f1": 0.45, "efficiency_peak_rss_mb": 1176.1367})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "data.json").write_text(json.dumps({
        "intake": {"rows_in": 750, "rows_used": 745, "rows_rejected": 5},
        "splits": {"train": 550, "val": 46, "test": 149},
        "classes": [{"class": "cat", "train": 300, "val": 25, "test": 80},
                    {"class": "dog", "train": 250, "val": 21, "test": 69}]}))
    (folder / "model_choice.json").write_text(json.dumps({
        "winner": "linear", "verdict": "fusion helped", "folds": 5, "holdout": False,
        "rows": 596, "optimism": 0.01}))
    pd.DataFrame([{"rank": 1, "candidate": "linear", "kind": "fused", "modalities": "image+text",
                   "cv_macro_f1_mean": 1.0, "cv_macro_f1_std": 0.0, "fit_seconds": 1.7,
                   "searched": {"lr": 0.0012345678901234, "dropout": 0.25}},
                  {"rank": 2, "candidate": "late", "kind": "fused", "modalities": "image+text",
                   "cv_macro_f1_mean": 1.0, "cv_macro_f1_std": 0.0, "fit_seconds": 11.0}]
                 ).to_csv(folder / "model_choice.csv", index=False)
    page = render_report(folder, {"dataset": "d"}).read_text()
    # Data: rows in, rejected, split sizes and class balance are on the page.
    assert "750 rows in = 745 used + 5 rejected" in page and "Split: train 550, val 46, test 149" in page
    assert "<td>cat</td>" in page and '<td class="num">405</td>' in page  # cat, all splits
    # Uncertainty: the headline and the gain with their intervals, and the doubt in words.
    assert "Test macro-F1 0.7500 (95% CI 0.6800 to 0.8100)" in page
    assert "text alone 0.7397: fusion gained +0.0103 (95% CI -0.0310 to +0.0520)" in page
    assert "That interval includes 0: on these 149 test rows the gain cannot be told" in page
    assert '<p class="good">' not in page  # a gain that may be none is not shown as a win
    # Ties: the rule that picked one is stated; settings are rounded, not 16 digits.
    assert "A tie goes to the simpler model" in page
    assert "lr=0.00123, dropout=0.25" in page and "0.0012345678901234" not in page
    # Words, not code names; and the two "image only" scores say which is which.
    assert "image alone (a model trained on image only): macro-F1" in page
    pd.DataFrame([{"subset": "image", "macro_f1": 0.45, "accuracy": 0.5}]).to_csv(
        folder / "modality_subsets.csv", index=False)
    page = render_report(folder, {"dataset": "d"}).read_text()
    assert ("This model, scored with only these modalities present (the rest masked as missing): "
            "not the single-modality baselines above") in page
    assert "serving: peak memory (MB)" in page and "1176.1367" in page
