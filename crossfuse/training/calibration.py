"""Calibration: expected calibration error, reliability diagrams, temperature scaling.

Temperature scaling (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural
Networks", ICML 2017) divides the logits by one scalar ``T`` fitted on the validation
split by minimising the negative log-likelihood; predictions (the argmax) do not change,
probabilities become more honest. Log-probabilities serve as logits (softmax is
shift-invariant), so ``T`` can be fitted from probabilities alone.

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


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities ``[N, C]`` as ``softmax(log(p) / T)``."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """The ``T`` in [0.05, 20] minimising the NLL of ``apply_temperature(probs, T)`` on ``y``."""
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        scaled = apply_temperature(probs, float(np.exp(log_t)))
        return float(-np.log(np.clip(scaled[np.arange(len(y)), y], 1e-12, 1.0)).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
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
