"""Cross-fitting one candidate: its fold models trained side by side, scored on rows no choice saw.

A :class:`FoldPlan` deals the train+val rows into a calibration slice (held out of every
fit: the shipped model's temperature is fitted there) and ``k`` content-grouped,
stratified folds. :func:`cross_fit` trains one model per held-out fold, epoch by epoch in
lockstep, so after every epoch each model's score on its held-out fold is known at once:

- **what ships** stops early on the mean over folds of the held-out macro-F1 (ties: the
  lower mean loss), and keeps every fold model's weights at that epoch ``E*``;
- **what is scored** never chose itself: fold ``f``'s out-of-fold predictions are taken at
  the epoch that maximises the *other* folds' mean (leave-one-fold-out), so fold ``f``'s
  own score never picks the epoch it is scored at. :func:`combine_trials` applies the
  same rule across the settings a search tried.

Above ``fusion.auto.holdout_above`` rows one model is trained, without folds 0 and 1: it
stops early (and a search chooses) on fold 1 and is scored on fold 0, which nothing chose on.

Example
-------
>>> plan = fold_plan(fs, cfg)                                             # doctest: +SKIP
>>> fit = cross_fit(fs, plan, FusionConfig(method="gmu"), TrainConfig(), seed=0)  # doctest: +SKIP
>>> fit.fold_scores, fit.ship_epoch                                       # doctest: +SKIP
([0.91, 0.88, 0.9, 0.93, 0.87], 17)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from crossfuse.config import FusionConfig, RunConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionHead
from crossfuse.metrics import macro_f1, predict_split
from crossfuse.training.folds import content_groups, order_key, stratified_folds
from crossfuse.training.loop import LOSS_MIN_DELTA, start_training, train_epoch

CALIBRATION = -1  # the fold number of calibration rows: no model trains on them
UNUSED = "unused"

FoldCallback = Callable[[int, int], None]  # (epochs done, most epochs)


@dataclass(frozen=True)
class FoldPlan:
    """Which train+val rows calibrate, which fold each other row is in, and who is scored.

    ``rows``: feature-set row numbers of train+val; ``folds``: each one's fold (``-1`` for
    the calibration slice); ``k`` folds; ``holdout``: one model, selected on fold 1 and
    scored on fold 0, instead of ``k`` models.
    """

    rows: np.ndarray
    folds: np.ndarray
    k: int
    holdout: bool

    @property
    def calibration_rows(self) -> np.ndarray:
        return self.rows[self.folds == CALIBRATION]

    @property
    def scored(self) -> list[int]:
        """The folds that are scored: all ``k``, or fold 0 alone in a holdout."""
        return [0] if self.holdout else list(range(self.k))

    def trains_on(self, scored_fold: int) -> np.ndarray:
        """bool ``[len(rows)]``: the rows the model scored on ``scored_fold`` trains on."""
        kept = (self.folds != CALIBRATION) & (self.folds != scored_fold)
        return kept & (self.folds != 1) if self.holdout else kept

    def fit_rows(self) -> np.ndarray:
        """Feature-set row numbers every final fit may use: train+val less the calibration slice."""
        return self.rows[self.folds != CALIBRATION]


def calibration_slice(labels: np.ndarray, groups: list[str], fraction: float, seed: int
                      ) -> np.ndarray:
    """bool ``[N]``: about ``fraction`` of each class's content groups, in seeded hash order.

    A class keeps at least two groups for the folds; whole groups move, so a copy of a
    calibration row is never trained on.

    >>> calibration_slice(np.array([0] * 10 + [1] * 3), [str(i) for i in range(13)], 0.2, 0).sum()
    np.int64(2)
    """
    chosen = np.zeros(len(labels), dtype=bool)
    members: dict[str, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)
    by_class: dict[int, list[str]] = {}
    for group, rows in members.items():
        by_class.setdefault(int(labels[rows[0]]), []).append(group)
    for label_groups in by_class.values():
        take = min(round(fraction * len(label_groups)), max(0, len(label_groups) - 2))
        for group in sorted(label_groups, key=lambda g: order_key(seed, f"calibration:{g}"))[:take]:
            chosen[members[group]] = True
    return chosen


def fold_plan(fs: FeatureSet, cfg: RunConfig) -> FoldPlan:
    """The calibration slice and the folds of ``fs``'s train+val rows (content-grouped, stratified)."""
    rows = np.flatnonzero(fs.index["split"].isin(["train", "val"]).to_numpy())
    auto = cfg.fusion.auto
    labels = fs.index["label_idx"].to_numpy()[rows]
    groups = content_groups(fs.index.iloc[rows])
    calibrate = calibration_slice(labels, groups, auto.calibration_fraction, cfg.seed)
    folds = np.full(len(rows), CALIBRATION, dtype=np.int64)
    rest = ~calibrate
    folds[rest] = stratified_folds(labels[rest], fs.index["id"].to_numpy()[rows][rest], auto.folds,
                                   cfg.seed, groups=[g for g, r in zip(groups, rest) if r])
    return FoldPlan(rows, folds, auto.folds, holdout=int(rest.sum()) > auto.holdout_above)


def with_splits(fs: FeatureSet, rows: np.ndarray, splits: np.ndarray) -> FeatureSet:
    """``fs`` with ``rows`` given ``splits`` and every other row ``unused``."""
    split = np.full(len(fs.index), UNUSED, dtype=object)
    split[rows] = splits
    return dataclasses.replace(fs, index=fs.index.assign(split=split))


@dataclass
class FoldFit:
    """One setting's cross-fit: the fold models that ship and the honest out-of-fold scores.

    ``oof`` ``[len(plan.rows), C]`` holds each scored fold's probabilities at its
    leave-one-fold-out epoch (NaN elsewhere); ``choice`` holds, per scored fold, the value
    that chose that epoch (the other folds' mean, or fold 1's score in a holdout): the
    number a search compares settings by for that fold.
    """

    heads: list[FusionHead]
    ship_epoch: int
    ship_value: tuple[float, float]
    oof: np.ndarray
    fold_scores: list[float]
    choice: list[tuple[float, float]]
    epochs_run: int
    seconds: float
    history: list[float] = field(default_factory=list)  # the shipping criterion per epoch


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(macro-F1, loss) ``a`` beats ``b``: higher F1, or the same F1 and a clearly lower loss."""
    return a[0] > b[0] + 1e-9 or (abs(a[0] - b[0]) <= 1e-9 and a[1] < b[1] - LOSS_MIN_DELTA)


def cross_fit(fs: FeatureSet, plan: FoldPlan, fusion: FusionConfig, train: TrainConfig, seed: int,
              modalities: list[str] | None = None, on_epoch: FoldCallback | None = None) -> FoldFit:
    """Train the scored folds' models in lockstep; see the module for what is kept.

    Parameters
    ----------
    fs: features; only ``plan.rows`` are read (the test split never is).
    plan: the folds (:func:`fold_plan`).
    fusion, train: the candidate's settings; model ``f`` is seeded ``seed + f``.
    modalities: the subset a unimodal candidate reads; default all.
    on_epoch: called as ``on_epoch(epoch, train.epochs)`` after every epoch.
    """
    started = time.perf_counter()
    modalities = modalities or fs.modalities
    scored = plan.scored
    heads, states = [], []
    for f in scored:
        view = with_splits(fs, plan.rows, np.where(plan.trains_on(f), "train", UNUSED))
        heads.append(start_training(view, fusion, train, seed + f, modalities))
    evaluated = with_splits(fs, plan.rows, np.where(plan.folds != CALIBRATION, "val", UNUSED))
    inputs = evaluated.split_inputs("val", modalities, heads[0][0].spec.token_inputs)
    y = inputs.labels.numpy()
    fold_of = plan.folds[plan.folds != CALIBRATION]
    at = {f: fold_of == f for f in range(plan.k)}
    n_classes = len(fs.labels)
    select_fold = 1 if plan.holdout else None

    # Each model is scored after every epoch on its own fold (and, in a holdout, on fold 1).
    watched = [[scored[i], select_fold] if plan.holdout else [scored[i]] for i in range(len(scored))]
    views = [{fold: inputs.select(torch.from_numpy(np.flatnonzero(at[fold]))) for fold in folds}
             for folds in watched]
    best_ship, ship_epoch, stale, history = (-1.0, math.inf), 0, 0, []
    best_choice = [(-1.0, math.inf)] * len(scored)
    oof_at = [np.full((int(at[f].sum()), n_classes), np.nan) for f in scored]
    shipped_states = [None] * len(scored)
    epoch = 0
    for epoch in range(1, train.epochs + 1):
        scores: dict[int, tuple[float, float]] = {}
        probs: dict[int, np.ndarray] = {}
        for i, (head, data, targets, optimiser, generator) in enumerate(heads):
            train_epoch(head, data, targets, optimiser, generator, fusion, train)
            for fold, view in views[i].items():
                probs[fold] = predict_split(head, view).probs
                scores[fold] = _fold_score(y[at[fold]], probs[fold], n_classes)
        if plan.holdout:
            ship = scores[select_fold]
            choices = [ship]
        else:
            ship = _mean(scores.values())
            choices = [_mean(s for g, s in scores.items() if g != f) for f in scored]
        history.append(ship[0])
        for i, f in enumerate(scored):  # fold f's epoch is chosen without fold f's own score
            if _better(choices[i], best_choice[i]):
                best_choice[i] = choices[i]
                oof_at[i] = probs[f]
        if _better(ship, best_ship):
            best_ship, ship_epoch, stale = ship, epoch, 0
            shipped_states = [copy.deepcopy(h[0].state_dict()) for h in heads]
        else:
            stale += 1
        if on_epoch:
            on_epoch(epoch, train.epochs)
        if stale >= train.patience:
            break
    oof = np.full((len(plan.rows), n_classes), np.nan)
    in_cv = np.flatnonzero(plan.folds != CALIBRATION)
    fold_scores = []
    for i, f in enumerate(scored):
        oof[in_cv[at[f]]] = oof_at[i]
        fold_scores.append(macro_f1(y[at[f]], oof_at[i].argmax(-1), n_classes))
    shipped = []
    for (head, *_), state in zip(heads, shipped_states, strict=True):
        head.load_state_dict(state)
        shipped.append(head.eval())
    return FoldFit(shipped, ship_epoch, best_ship, oof, fold_scores, best_choice, epoch,
                   time.perf_counter() - started, history)


def _fold_score(y: np.ndarray, probs: np.ndarray, n_classes: int) -> tuple[float, float]:
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean()) if len(y) else 0.0
    return macro_f1(y, probs.argmax(-1), n_classes), nll


def _mean(values) -> tuple[float, float]:
    values = list(values)
    return (float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values])))


def combine_trials(fits: list[FoldFit], plan: FoldPlan) -> tuple[int, np.ndarray, list[float]]:
    """Across the settings a search tried: (the index of the one that ships, the honest
    out-of-fold probabilities ``[len(plan.rows), C]``, the honest fold scores).

    What ships is the setting with the best shipping criterion. Scored fold ``f`` takes its
    predictions from the setting whose ``choice`` for ``f`` is best (the earlier on a tie),
    a number fold ``f``'s own rows never entered.
    """
    def rank(value: tuple[float, float], t: int) -> tuple[float, float, int]:
        return value[0], -value[1], -t

    ship = max(range(len(fits)), key=lambda t: rank(fits[t].ship_value, t))
    oof = np.full_like(fits[0].oof, np.nan)
    scores = []
    for i, f in enumerate(plan.scored):
        t = max(range(len(fits)), key=lambda t: rank(fits[t].choice[i], t))
        rows = plan.folds == f
        oof[rows] = fits[t].oof[rows]
        scores.append(fits[t].fold_scores[i])
    return ship, oof, scores
