"""Calibration: expected calibration error, reliability diagrams, temperature scaling.

Temperature scaling (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural
Networks", ICML 2017) divides the logits by one scalar ``T`` fitted by minimising the
negative log-likelihood on rows the model never trained on; predictions (the argmax) do
not change, probabilities become more honest. Log-probabilities serve as logits (softmax
is shift-invariant), so ``T`` can be fitted from probabilities alone.

``T`` is bounded to [``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``], and every calibrated
probability is kept ``PROBABILITY_FLOOR / C`` away from 0 and 1: a few hundred rows
never justify certainty, and an exact 0 makes a log loss infinite.

Example
-------
>>> import numpy as np
>>> y = np.array([0, 1, 1, 0]); p = np.array([[.99, .01], [.02, .98], [.97, .03], [.6, .4]])
>>> round(expected_calibration_error(y, p, bins=15), 3)
0.335
>>> fit_temperature(y, p) > 1.0          # over-confident -> soften
True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from crossfuse.plots import new_figure, save_figure


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-size-weighted gap between confidence and accuracy over ``bins`` equal-width bins.

    Parameters
    ----------
    y: true class ids ``[N]``.
    probs: class probabilities ``[N, C]``.
    """
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


MIN_TEMPERATURE, MAX_TEMPERATURE = 0.25, 20.0
PROBABILITY_FLOOR = 1e-6  # mixed in uniformly: no served probability is exactly 0 or 1


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities ``[N, C]`` as ``softmax(log(p) / T)``, floored (see the module).

    >>> p = apply_temperature(np.array([[1.0, 0.0]]), 0.25)
    >>> bool(0 < p.min() and p.max() < 1), p.argmax()
    (True, np.int64(0))
    """
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return (1.0 - PROBABILITY_FLOOR) * scaled + PROBABILITY_FLOOR / scaled.shape[1]


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """The ``T`` in [``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``] minimising the NLL of
    ``apply_temperature(probs, T)`` on ``y``; 1 when there are no rows to fit it on."""
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        scaled = apply_temperature(probs, float(np.exp(log_t)))
        return float(-np.log(np.clip(scaled[np.arange(len(y)), y], 1e-12, 1.0)).mean())

    result = minimize_scalar(nll, bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
                             method="bounded")
    return float(np.exp(result.x))


def plot_reliability(y: np.ndarray, curves: dict[str, np.ndarray], path: Path, bins: int = 15,
                     title: str = "reliability") -> None:
    """Save a reliability diagram: accuracy per confidence bin for each named probability set."""
    fig, ax = new_figure((5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, probs in curves.items():
        confidence = probs.max(axis=1)
        correct = probs.argmax(axis=1) == y
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            if (which == b).any():
                xs.append(confidence[which == b].mean())
                ys.append(correct[which == b].mean())
        ece = expected_calibration_error(y, probs, bins)
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    save_figure(fig, path)
