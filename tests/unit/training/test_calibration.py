"""Calibration: ECE, temperature fitting, and its use by evaluation and the served model."""

import numpy as np
import pytest

from crossfuse.training.calibration import apply_temperature, expected_calibration_error, fit_temperature


def test_ece_is_zero_when_confidence_matches_accuracy():
    y = np.array([0, 0, 0, 1])                                  # 3 of 4 predictions of 0 correct
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(y, probs) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.tile([0.95, 0.05], (4, 1))) == pytest.approx(0.2)


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 3
    true_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=p) for p in true_probs])
    overconfident = apply_temperature(true_probs, 0.5)           # as if logits were doubled
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(2.0, rel=0.1)
    fixed = apply_temperature(overconfident, t)
    assert (fixed.argmax(1) == overconfident.argmax(1)).all()
    assert expected_calibration_error(y, fixed) < expected_calibration_error(y, overconfident)
