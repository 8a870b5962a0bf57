"""The promotion gate: does a challenger replace the champion? Pure, no MLflow.

Rules (``registry`` section of the config):

1. **primary**: the challenger's ``metric`` must beat the champion's by more than
   ``margin`` (higher or lower is better per ``higher_is_better()``). When both models'
   test predictions cover the same rows (a :class:`PairedBootstrap`), the *lower end of
   the 95% interval* of the gain must clear ``margin``, not just the point estimate;
2. **guardrails** — the challenger may not be worse than the champion by more than:
   ``max_ece_increase`` on calibrated test ECE (``test_ece_calibrated``), and
   ``max_missing_modality_drop`` on test macro-F1 with any one modality missing
   (``present_<others>_test_macro_f1``).

3. **fusion gain**, champion or not: a fused model must not lose to its best unimodal
   baseline by more than ``min_fusion_gain`` allows (``fusion_gain_macro_f1``).

With no champion, the challenger is promoted if it passes 3. A check whose number one side lacks
(an older champion, a one-modality model) is skipped and says so. Every check keeps
both numbers and its limit, so the decision can be audited.

Example
-------
>>> from crossfuse.config import RegistryConfig
>>> d = decide_promotion({"test_macro_f1": 0.91}, {"test_macro_f1": 0.88}, "3", RegistryConfig())
>>> d.promote, d.reason
(True, "test_macro_f1 0.9100 beats champion v3's 0.8800 (margin 0.0000); guardrails passed")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from crossfuse.config import RegistryConfig
from crossfuse.data.validation.report import CLASSES_LOST_TAG
from crossfuse.errors import UserError
from crossfuse.metrics import BOOTSTRAP_SCORES, bootstrap_scores, interval

ECE_METRIC = "test_ece_calibrated"
FUSION_GAIN = "fusion_gain_macro_f1"
_PRESENT, _SUFFIX = "present_", "_test_macro_f1"


@dataclass(frozen=True)
class Check:
    """One comparison of the gate."""

    check: str
    challenger: float | None
    champion: float | None
    limit: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    checks: list[Check] = field(default_factory=list)

    def compared_metrics(self) -> dict[str, float]:
        """The challenger's value of every metric a check compared."""
        return {c.check: c.challenger for c in self.checks if c.challenger is not None}

    def as_dict(self) -> dict:
        return {"promote": self.promote, "reason": self.reason,
                "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class PairedBootstrap:
    """The challenger's gain over the champion on the same test rows, resampled in pairs.

    ``gain`` is the challenger's metric minus the champion's on all rows; ``low``/``high``
    the 2.5% and 97.5% percentiles over ``resamples`` bootstrap draws of the rows.
    """

    metric: str
    gain: float
    low: float
    high: float
    rows: int
    resamples: int


def paired_bootstrap(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, num_classes: int,
                     metric: str = "test_macro_f1", resamples: int = 1000, seed: int = 0
                     ) -> PairedBootstrap:
    """Resample the test rows with replacement; score both models' predictions on each draw.

    ``y``, ``challenger``, ``champion``: class ids ``[N]`` of the same rows, in the same order.
    Every draw is scored at once from confusion counts (:func:`crossfuse.metrics.bootstrap_scores`),
    in blocks of draws; the draws and percentiles are those of scoring them one by one.

    >>> y = np.arange(100) % 2
    >>> b = paired_bootstrap(y, y, np.where(np.arange(100) < 30, 1 - y, y), 2, resamples=200)
    >>> round(b.gain, 2), b.low > 0
    (0.3, True)
    >>> paired_bootstrap(y, y, y, 2, resamples=200).low
    0.0
    """
    score = BOOTSTRAP_SCORES[metric]
    drawn = bootstrap_scores(y, [challenger, champion], num_classes, metric, resamples, seed)
    gain = float(score(np.asarray(y), np.asarray(challenger), num_classes)[0]
                 - score(np.asarray(y), np.asarray(champion), num_classes)[0])
    low, high = interval(drawn[:, 0] - drawn[:, 1])
    return PairedBootstrap(metric, gain, low, high, len(y), resamples)


def data_hold(data_tags: dict[str, str], allow_class_loss: bool) -> str | None:
    """Why the data forbids promoting, whatever the metrics: classes the training data lost
    (validation's tag), unless ``validation.allow_class_loss``; else None.

    >>> data_hold({CLASSES_LOST_TAG: "cat"}, False)[:52]
    'classes lost from the training data: cat (all their '
    >>> data_hold({CLASSES_LOST_TAG: "cat"}, True) is None
    True
    """
    lost = data_tags.get(CLASSES_LOST_TAG)
    if not lost or allow_class_loss:
        return None
    return (f"classes lost from the training data: {lost} (all their rows rejected); the model "
            f"cannot predict them. Fix those rows, or set validation.allow_class_loss=true to "
            f"promote a model without them")


def require_metric(metrics: dict[str, float], metric: str) -> None:
    """Raise :class:`~crossfuse.errors.UserError` naming the choices unless ``metric`` is one."""
    if metric not in metrics:
        raise UserError(f"registry.metric={metric!r} is not an evaluation metric; choose one "
                        f"of {sorted(metrics)}")


def missing_one_metrics(metrics: dict[str, float]) -> dict[str, str]:
    """``{missing modality: metric name}`` for each single-modality-missing score in ``metrics``.

    >>> missing_one_metrics({"present_image_test_macro_f1": .6, "present_text_test_macro_f1": .7,
    ...                      "present_image_and_text_test_macro_f1": .9})
    {'text': 'present_image_test_macro_f1', 'image': 'present_text_test_macro_f1'}
    """
    subsets = {k: k[len(_PRESENT):-len(_SUFFIX)].split("_and_") for k in metrics
               if k.startswith(_PRESENT) and k.endswith(_SUFFIX)}
    if not subsets:
        return {}
    full = max(subsets.values(), key=len)
    return {next(m for m in full if m not in kept): name for name, kept in subsets.items()
            if len(kept) == len(full) - 1}


def _primary_bootstrap(b: PairedBootstrap, new: float, old: float, version: str,
                       gate: RegistryConfig) -> Check:
    passed = b.low > gate.margin
    verb = "clears" if passed else "does not clear"
    return Check(b.metric, new, old, gate.margin, passed,
                 f"{b.metric} {new:.4f} vs champion v{version}'s {old:.4f}: gain {b.gain:+.4f}, "
                 f"95% interval [{b.low:+.4f}, {b.high:+.4f}] (paired bootstrap of {b.rows} test "
                 f"rows, {b.resamples} draws) {verb} the margin {gate.margin:.4f}")


def _primary(metric: str, new: float, old: float, version: str, gate: RegistryConfig) -> Check:
    higher = gate.higher_is_better()
    gain = new - old if higher else old - new
    passed = gain > gate.margin
    verb = "beats" if passed else "does not beat"
    return Check(metric, new, old, gate.margin, passed,
                 f"{metric} {new:.4f} {verb} champion v{version}'s {old:.4f} "
                 f"(margin {gate.margin:.4f})")


def _worse_by(name: str, label: str, new: float | None, old: float | None,
              limit: float, lower_is_better: bool) -> Check:
    if new is None or old is None:
        side = "challenger" if new is None else "champion"
        return Check(name, new, old, limit, True, f"{label}: skipped, the {side} has no {name}")
    worse = (new - old) if lower_is_better else (old - new)
    passed = worse <= limit
    return Check(name, new, old, limit, passed,
                 f"{label} {new:.4f} vs champion's {old:.4f}: worse by {worse:+.4f}, "
                 f"{'within' if passed else 'over'} the limit {limit:.4f}")


def fusion_gain_check(gain: float, minimum: float) -> Check:
    """Does the fused model beat its best unimodal baseline (``fusion_gain_macro_f1 >= minimum``)?

    Only fused models evaluated beside unimodal baselines have a fusion gain to check.

    >>> check = fusion_gain_check(-0.09, 0.0)
    >>> check.passed, check.detail.split(":")[0]
    (False, 'fusion lost to one modality alone')
    """
    passed = gain >= minimum
    detail = (f"fusion gain {gain:+.4f} over the best single modality (minimum {minimum:.4f})"
              if passed else
              f"fusion lost to one modality alone: {FUSION_GAIN} {gain:.4f} is below the minimum "
              f"{minimum:.4f} (registry.guardrails.min_fusion_gain)")
    return Check(FUSION_GAIN, gain, None, minimum, passed, detail)


def decide_promotion(challenger: dict[str, float], champion: dict[str, float] | None,
                     champion_version: str | None, gate: RegistryConfig,
                     bootstrap: PairedBootstrap | None = None) -> Decision:
    """Apply the gate to a challenger's metrics against the champion's.

    Parameters
    ----------
    challenger: the challenger's evaluation metrics (must hold ``gate.metric``).
    champion: the champion's metrics, or None when there is no champion.
    champion_version: the champion's version, for the reason text.
    gate: the registry config (metric, direction, margin, guardrails).
    bootstrap: the paired bootstrap of the two models' test predictions on the same rows,
        when there is one; the primary check then asks its interval to clear the margin.
    """
    metric = gate.metric
    require_metric(challenger, metric)
    rails = gate.guardrails
    fusion = ([fusion_gain_check(challenger[FUSION_GAIN], rails.min_fusion_gain)]
              if rails.min_fusion_gain is not None and FUSION_GAIN in challenger else [])
    if champion is None or metric not in champion:
        why = "no champion yet" if champion is None else f"champion v{champion_version} has no {metric}"
        checks = [Check(metric, challenger[metric], None, None, True, why), *fusion]
        if fusion and not fusion[0].passed:  # losing to one modality is never promoted
            return Decision(False, fusion[0].detail, checks)
        return Decision(True, f"{why}; {metric}={challenger[metric]:.4f}", checks)
    if bootstrap is not None and bootstrap.metric == metric:
        first = _primary_bootstrap(bootstrap, challenger[metric], champion[metric],
                                   champion_version, gate)
    else:
        first = _primary(metric, challenger[metric], champion[metric], champion_version, gate)
    checks = [first]
    if rails.max_ece_increase is not None:
        checks.append(_worse_by(ECE_METRIC, "calibrated ECE", challenger.get(ECE_METRIC),
                                champion.get(ECE_METRIC), rails.max_ece_increase, True))
    if rails.max_missing_modality_drop is not None:
        for missing, name in sorted(missing_one_metrics(challenger).items()):
            checks.append(_worse_by(name, f"macro-F1 with {missing} missing", challenger[name],
                                    champion.get(name), rails.max_missing_modality_drop, False))
    checks += fusion
    failed = [c for c in checks if not c.passed]
    if failed:
        return Decision(False, "; ".join(c.detail for c in failed), checks)
    return Decision(True, f"{checks[0].detail}; guardrails passed", checks)
