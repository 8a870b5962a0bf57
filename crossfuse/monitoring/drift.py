"""Drift between a model's training data and new data: embeddings, predicted labels, missingness.

- :func:`mmd_test`: a two-sample test on one modality's pooled embeddings — the squared maximum
  mean discrepancy (Gretton et al., JMLR 2012) with a Gaussian kernel whose bandwidth is the
  median pairwise distance, and a permutation p-value. Both samples are capped at
  ``max_samples`` rows (a seeded draw), so the cost is bounded whatever the row counts.
- :func:`label_shift`: the total variation distance between two predicted-label distributions.
- :func:`missing_rates`: the share of rows without each modality, on both sides.

Example
-------
>>> rng = np.random.default_rng(0)
>>> same = mmd_test(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), seed=0)
>>> moved = mmd_test(rng.normal(size=(200, 8)), rng.normal(0.5, 1, size=(200, 8)), seed=0)
>>> same.p_value > 0.05, moved.p_value < 0.01
(True, True)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MMDResult:
    """``mmd2``: the unbiased MMD² estimate; ``p_value``: share of label permutations scoring at
    least as high (with the +1 correction); the row counts actually compared."""

    mmd2: float
    p_value: float
    n_reference: int
    n_current: int
    bandwidth: float


def _capped(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= limit else x[np.sort(rng.choice(len(x), limit, replace=False))]


def _unbiased_mmd2(k: np.ndarray, first: np.ndarray) -> float:
    """MMD² of the split ``first`` (bool mask) vs the rest, from the pooled kernel matrix ``k``."""
    a, b = first, ~first
    n, m = a.sum(), b.sum()
    kaa, kbb, kab = k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]
    return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1))
                 + (kbb.sum() - np.trace(kbb)) / (m * (m - 1)) - 2 * kab.mean())


def mmd_test(reference: np.ndarray, current: np.ndarray, permutations: int = 200,
             max_samples: int = 500, seed: int = 0) -> MMDResult:
    """Two-sample MMD test of ``reference`` ``[n, d]`` against ``current`` ``[m, d]``.

    Rows are L2-normalised first (pooled embeddings are compared by direction, as their
    encoders' users compare them). Needs at least 2 rows on each side.
    """
    if len(reference) < 2 or len(current) < 2:
        raise ValueError(f"an MMD test needs 2+ rows on each side, got {len(reference)} and "
                         f"{len(current)}")
    rng = np.random.default_rng(seed)
    x = _capped(np.asarray(reference, dtype=np.float64), max_samples, rng)
    y = _capped(np.asarray(current, dtype=np.float64), max_samples, rng)
    pooled = np.concatenate([x, y])
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    sq = np.maximum((pooled ** 2).sum(1)[:, None] + (pooled ** 2).sum(1)[None, :]
                    - 2 * pooled @ pooled.T, 0.0)
    off_diagonal = sq[np.triu_indices(len(pooled), 1)]
    bandwidth = float(np.sqrt(np.median(off_diagonal[off_diagonal > 0]))) if (off_diagonal > 0).any() else 1.0
    k = np.exp(-sq / (2 * bandwidth ** 2))
    first = np.zeros(len(pooled), dtype=bool)
    first[:len(x)] = True
    observed = _unbiased_mmd2(k, first)
    higher = sum(_unbiased_mmd2(k, rng.permutation(first)) >= observed for _ in range(permutations))
    return MMDResult(mmd2=observed, p_value=(higher + 1) / (permutations + 1),
                     n_reference=len(x), n_current=len(y), bandwidth=bandwidth)


def label_shift(reference: list[str], current: list[str], classes: list[str]) -> dict:
    """Predicted-label distributions on both sides and their total variation distance (0..1).

    >>> label_shift(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])["total_variation"]
    0.25
    """
    def shares(labels) -> np.ndarray:
        found = Counter(labels)
        counts = np.array([found.get(c, 0) for c in classes], dtype=float)
        return counts / max(counts.sum(), 1.0)

    ref, cur = shares(reference), shares(current)
    return {"total_variation": float(0.5 * np.abs(ref - cur).sum()),
            "reference": dict(zip(classes, ref.round(6).tolist(), strict=True)),
            "current": dict(zip(classes, cur.round(6).tolist(), strict=True))}


def missing_rates(reference: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> dict:
    """Per modality: the share of rows without it in each set (``present`` bool arrays in),
    and the change.

    >>> missing_rates({"text": np.array([True, True])}, {"text": np.array([True, False])})
    {'text': {'reference': 0.0, 'current': 0.5, 'change': 0.5}}
    """
    out = {}
    for m in reference:
        ref = float(1 - np.mean(reference[m])) if len(reference[m]) else 0.0
        cur = float(1 - np.mean(current[m])) if len(current[m]) else 0.0
        out[m] = {"reference": ref, "current": cur, "change": cur - ref}
    return out


@dataclass
class DriftReport:
    """Every drift figure as a flat metric (``drift_<name>``) and which of them crossed their
    threshold (``flagged``: a reason per drifted figure, in words)."""

    metrics: dict[str, float]
    flagged: list[str]
    label_shift: dict
    missing: dict


def assess_drift(reference_vectors: dict[str, np.ndarray], current_vectors: dict[str, np.ndarray],
                 reference_present: dict[str, np.ndarray], current_present: dict[str, np.ndarray],
                 reference_labels: list[str], predicted_labels: list[str], classes: list[str],
                 cfg, seed: int = 0) -> DriftReport:
    """Compare new data with a model's training data (``cfg``: a :class:`DriftConfig`).

    Per modality, an MMD test on the present rows' vectors and the change in the missing
    rate; overall, the distance of the predicted labels from the training labels. A figure
    drifts when it crosses its threshold (``max_p_value``, ``max_missing_change``,
    ``max_label_shift``).
    """
    metrics: dict[str, float] = {}
    flagged: list[str] = []
    for m in reference_vectors:
        ref, cur = reference_vectors[m], current_vectors.get(m, np.zeros((0, 0)))
        if len(ref) < 2 or len(cur) < 2:
            continue  # too few rows with this modality to test; its missing rate still counts
        test = mmd_test(ref, cur, cfg.permutations, cfg.max_samples, seed)
        metrics[f"drift_{m}_mmd2"], metrics[f"drift_{m}_p_value"] = test.mmd2, test.p_value
        if test.p_value < cfg.max_p_value:
            flagged.append(f"{m} embeddings: MMD p-value {test.p_value:.4f} < {cfg.max_p_value}")
    missing = missing_rates(reference_present, current_present)
    for m, rates in missing.items():
        metrics[f"drift_{m}_missing_rate"] = rates["current"]
        metrics[f"drift_{m}_missing_change"] = rates["change"]
        if rates["change"] > cfg.max_missing_change:
            flagged.append(f"{m} missing in {rates['current']:.1%} of rows, up from "
                           f"{rates['reference']:.1%} (more than {cfg.max_missing_change:.0%})")
    shift = label_shift(reference_labels, predicted_labels, classes)
    metrics["drift_label_shift"] = shift["total_variation"]
    if shift["total_variation"] > cfg.max_label_shift:
        flagged.append(f"predicted labels: total variation {shift['total_variation']:.3f} from the "
                       f"training labels > {cfg.max_label_shift}")
    return DriftReport(metrics=metrics, flagged=flagged, label_shift=shift, missing=missing)
