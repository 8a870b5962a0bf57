"""Classification metrics, and the one path from a head and a split to scored predictions.

Every place that scores a model — the training loop's validation, evaluation, the
subset matrix, robustness sweeps, importance, benchmarks — goes through
:func:`predict_split`, so a change to how predictions are made or scored is made once.

Example
-------
>>> macro_f1(np.array([0, 1, 1]), np.array([0, 1, 0]), num_classes=2)
0.6666666666666666
>>> scores = predict_split(head, fs.split_inputs("test", ["image", "text"]))   # doctest: +SKIP
>>> scores.macro_f1, scores.accuracy                                          # doctest: +SKIP
(0.98, 0.98)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

from crossfuse.features.store import SplitInputs
from crossfuse.fusion.model import predict_proba


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-averaged F1 over all ``num_classes`` classes (absent classes score 0).

    The same number as scikit-learn's ``f1_score(..., average="macro", zero_division=0)``
    with ``labels=range(num_classes)``, to the last digit, from one confusion count.
    """
    return float(macro_f1_batch(np.asarray(y_true)[None], np.asarray(y_pred)[None], num_classes)[0])


def macro_f1_batch(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro-F1 of each row of ``y_true``/``y_pred`` (``[B, N]`` class ids): ``[B]`` floats.

    One ``bincount`` counts all ``B`` confusion matrices at once, so a paired bootstrap of
    thousands of resamples costs milliseconds. Per class F1 = 2 TP / (true + predicted),
    0 where a class is neither true nor predicted (scikit-learn's formula and order).

    >>> macro_f1_batch(np.array([[0, 1, 1], [0, 0, 0]]), np.array([[0, 1, 0], [0, 0, 0]]), 2)
    array([0.66666667, 0.5       ])
    """
    y_true, y_pred = np.atleast_2d(y_true), np.atleast_2d(y_pred)
    b, k = len(y_true), num_classes
    cells = (np.arange(b)[:, None] * k + y_true) * k + y_pred
    counts = np.bincount(cells.ravel(), minlength=b * k * k).reshape(b, k, k).astype(np.float64)
    tp = np.diagonal(counts, axis1=1, axis2=2)
    denom = counts.sum(axis=2) + counts.sum(axis=1)  # true + predicted per class
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1)


BOOTSTRAP_SCORES = {
    "test_macro_f1": macro_f1_batch,
    "test_accuracy": lambda y, p, k: (np.atleast_2d(y) == np.atleast_2d(p)).mean(axis=1)}
_DRAW_CELLS = 1 << 22  # resampled rows scored at once: bounds memory on a large test split


def bootstrap_scores(y: np.ndarray, predictions: list[np.ndarray], num_classes: int,
                     metric: str = "test_macro_f1", resamples: int = 1000, seed: int = 0
                     ) -> np.ndarray:
    """``metric`` of each prediction vector on the same bootstrap draws of the rows.

    ``y`` and each of ``predictions``: class ids ``[N]`` of the same rows in the same order.
    Returns ``[resamples, len(predictions)]``. Draws are scored a block at a time from
    confusion counts (:func:`macro_f1_batch`); the blocks' sizes never change the draws.

    >>> y = np.arange(100) % 2
    >>> bootstrap_scores(y, [y, 1 - y], 2, resamples=3)
    array([[1., 0.],
           [1., 0.],
           [1., 0.]])
    """
    score = BOOTSTRAP_SCORES[metric]
    y, predictions = np.asarray(y), [np.asarray(p) for p in predictions]
    rng = np.random.default_rng(seed)
    block = max(1, _DRAW_CELLS // max(len(y), 1))
    out = []
    for start in range(0, resamples, block):
        draws = rng.integers(0, len(y), size=(min(block, resamples - start), len(y)))
        out.append(np.stack([score(y[draws], p[draws], num_classes) for p in predictions], axis=1))
    return np.concatenate(out) if out else np.zeros((0, len(predictions)))


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values``.

    >>> interval(np.arange(101.0))
    (2.5, 97.5)
    """
    tail = (100 - level * 100) / 2  # (1 - 0.95) / 2 * 100 is 2.5000000000000022
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def classification_metrics(y: np.ndarray, probs: np.ndarray, prefix: str = "test_"
                           ) -> dict[str, float]:
    """Accuracy, macro/micro F1, one-vs-rest AUROC and AUPRC (macro over classes), log loss.

    Parameters
    ----------
    y: true class ids ``[N]``.
    probs: class probabilities ``[N, C]``.
    prefix: metric name prefix, e.g. ``test_`` or ``test_<target>_``.

    AUROC/AUPRC average over the classes that have both positives and negatives in ``y``
    (others have no defined curve); absent classes still count in macro-F1 as 0.

    >>> m = classification_metrics(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.6, .4]]))
    >>> round(m["test_accuracy"], 3), round(m["test_auroc_ovr"], 3)
    (0.667, 1.0)
    """
    k = probs.shape[1]
    pred = probs.argmax(-1)
    metrics = {f"{prefix}accuracy": float((pred == y).mean()),
               f"{prefix}macro_f1": macro_f1(y, pred, k),
               f"{prefix}micro_f1": float(f1_score(y, pred, labels=list(range(k)), average="micro",
                                                   zero_division=0)),
               f"{prefix}log_loss": float(log_loss(y, np.clip(probs, 1e-12, 1.0), labels=list(range(k))))}
    aurocs, auprcs = [], []
    for c in range(k):
        positives = y == c
        if 0 < positives.sum() < len(y):
            aurocs.append(roc_auc_score(positives, probs[:, c]))
            auprcs.append(average_precision_score(positives, probs[:, c]))
    if aurocs:
        metrics[f"{prefix}auroc_ovr"] = float(np.mean(aurocs))
        metrics[f"{prefix}auprc_ovr"] = float(np.mean(auprcs))
    return metrics


def metric_name(label: str) -> str:
    """MLflow metric names allow alphanumerics, ``_ - . /`` and spaces; map the rest to ``_``.

    >>> metric_name("circle+day")
    'circle_day'
    """
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in label)


@dataclass(frozen=True)
class SplitScores:
    """A head's predictions on one split: true ids ``[N]``, probabilities ``[N, C]``."""

    labels: np.ndarray
    probs: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class ids ``[N]`` (argmax)."""
        return self.probs.argmax(-1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())

    @property
    def macro_f1(self) -> float:
        return macro_f1(self.labels, self.predicted, self.probs.shape[1])

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood of the true classes."""
        probs = torch.from_numpy(self.probs).clamp_min(1e-12)
        return float(torch.nn.functional.nll_loss(probs.log(), torch.from_numpy(self.labels)))


def predict_split(head: torch.nn.Module, inputs: SplitInputs) -> SplitScores:
    """Score ``head`` on one split's inputs (eval mode, no gradients, batched).

    >>> from crossfuse.fusion import FusionSpec, build_fusion_head
    >>> head = build_fusion_head(FusionSpec("concat", {"text": 4}, num_classes=2, hidden_dim=8))
    >>> s = SplitInputs({"text": torch.randn(5, 4)}, {"text": torch.ones(5, dtype=torch.bool)},
    ...                 torch.tensor([0, 1, 0, 1, 1]))
    >>> predict_split(head, s).probs.shape
    (5, 2)
    """
    probs = predict_proba(head, inputs.vectors, inputs.present, inputs.tokens)
    return SplitScores(labels=inputs.labels.numpy(), probs=probs.numpy())
