"""Metric names in words, for the report and the console (MLflow keeps the code names).

>>> metric_label("baseline_image_test_macro_f1")
'image alone (a model trained on image only): macro-F1'
>>> metric_label("present_image_test_macro_f1")
'this model, only image present (the rest masked as missing): macro-F1'
>>> metric_label("efficiency_peak_rss_mb")
'serving: peak memory (MB)'
>>> metric_label("efficiency_text_encoder_parameters"), metric_label("importance_drop_text")
('text encoder: parameters', 'text importance: macro-F1 lost when dropped')
>>> metric_label("robustness_image_pixel_noise_auc")
'image robustness to pixel noise: area under macro-F1 against noise level'

"""

from __future__ import annotations

import re

_SCORES = {"macro_f1": "macro-F1", "accuracy": "accuracy"}

LABELS = {
    "test_accuracy": "accuracy",
    "test_macro_f1": "macro-F1",
    "test_macro_f1_ci": "macro-F1, 95% bootstrap interval",
    "test_micro_f1": "micro-F1",
    "test_auroc_ovr": "AUROC (one-vs-rest, macro)",
    "test_auprc_ovr": "AUPRC (one-vs-rest, macro)",
    "test_log_loss": "log loss, before calibration",
    "test_log_loss_calibrated": "log loss, calibrated (as served)",
    "test_ece": "expected calibration error, before calibration",
    "test_ece_calibrated": "expected calibration error, calibrated (as served)",
    "fusion_gain_macro_f1": "fusion gain: macro-F1 over the best single modality",
    "fusion_gain_macro_f1_ci": "fusion gain, 95% paired bootstrap interval",
    "test_samples": "test rows",
    "efficiency_head_parameters": "fusion head: parameters",
    "efficiency_features_ms_per_sample": "fusion head: ms per row (from features)",
    "efficiency_raw_ms_per_sample_batched": "serving: ms per row, batched (from raw inputs)",
    "efficiency_raw_latency_ms_single": "serving: latency of one request (ms)",
    "efficiency_peak_rss_mb": "serving: peak memory (MB)",
    "efficiency_peak_cuda_mb": "serving: peak GPU memory (MB)",
    "efficiency_load_seconds": "serving: seconds to load the model",
}

_PATTERNS = [
    (r"baseline_(.+)_test_(macro_f1|accuracy)",
     lambda m, s: f"{m} alone (a model trained on {m} only): {s}"),
    (r"present_(.+)_test_(macro_f1|accuracy)",
     lambda m, s: f"this model, only {m.replace('_and_', '+')} present (the rest masked as "
                  f"missing): {s}"),
    (r"efficiency_(.+)_encoder_parameters", lambda m: f"{m} encoder: parameters"),
    (r"robustness_([^_]+)_(.+)_auc",
     lambda m, kind: f"{m} robustness to {'feature noise' if kind == 'features' else kind.replace('_', ' ')}"
                     f": area under macro-F1 against noise level"),
    (r"importance_(drop|permutation)_(.+)",
     lambda how, m: f"{m} importance: macro-F1 lost when "
                    f"{'dropped' if how == 'drop' else 'shuffled'}"),
]


def metric_label(name: str) -> str:
    """``name`` (an MLflow metric) in words; an unknown name with its underscores as spaces."""
    if name in LABELS:
        return LABELS[name]
    for pattern, words in _PATTERNS:
        found = re.fullmatch(pattern, name)
        if found:
            return words(*(_SCORES.get(g, g) for g in found.groups()))
    return name.replace("_", " ")
