"""Cross-fitting one candidate: its fold models trained side by side, scored on rows no choice saw.

A :class:`FoldPlan` deals the train+val rows into a calibration slice (held out of every
fit: the shipped model's temperature is fitted there) and ``k`` content-grouped,
stratified folds. Fold 0 is the **tuning fold**: a candidate's search picks its settings
there (:func:`crossfuse.training.tuning.search`), so fold 0 is never scored. Then
:func:`cross_fit` trains one model per fold, epoch by epoch in lockstep, so after every
epoch each model's score on its held-out fold is known at once:

- training stops once the mean over folds of the held-out macro-F1 (ties: the lower mean
  loss) has not improved for ``train.patience`` epochs; **what ships** is each fold model
  at its own best epoch on data it did not train on (an honest test score follows later);
- **what is scored**, folds ``1..k-1``, never chose itself: fold ``f``'s out-of-fold
  predictions are taken at the epoch that maximises the *other* folds' mean
  (leave-one-fold-out), so neither the settings nor the epoch fold ``f`` is scored with
  were chosen on fold ``f``.

Above ``fusion.auto.holdout_above`` rows one model is trained, without folds 0 and 1: it
is tuned and stopped early on fold 0 and scored on fold 1, which nothing chose on.

Example
-------
>>> plan = fold_plan(fs, cfg)                                             # doctest: +SKIP
>>> fit = cross_fit(fs, plan, FusionConfig(method="gmu"), TrainConfig(), seed=0)  # doctest: +SKIP
>>> fit.fold_scores, fit.ship_epoch                                       # doctest: +SKIP
([0.88, 0.9, 0.93, 0.87], 17)
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
TUNING_FOLD = 0  # settings are searched here; never scored
# Fewer rows than this and no slice is held out: they would fit T to noise and cost the
# folds rows they need; the model ships uncalibrated (T = 1) and says so.
MIN_CALIBRATION_ROWS = 30
UNUSED = "unused"

FoldCallback = Callable[[int, int], None]  # (epochs done, most epochs)


@dataclass(frozen=True)
class FoldPlan:
    """Which train+val rows calibrate, which fold each other row is in, and who is scored.

    ``rows``: feature-set row numbers of train+val; ``folds``: each one's fold (``-1`` for
    the calibration slice); ``k`` folds; ``holdout``: one model, tuned and stopped on fold 0
    and scored on fold 1, instead of ``k`` models.
    """

    rows: np.ndarray
    folds: np.ndarray
    k: int
    holdout: bool

    @property
    def calibration_rows(self) -> np.ndarray:
        return self.rows[self.folds == CALIBRATION]

    @property
    def models(self) -> list[int]:
        """The held-out fold of each model trained: all ``k``, or fold 1 alone in a holdout."""
        return [TUNING_FOLD + 1] if self.holdout else list(range(self.k))

    @property
    def scored(self) -> list[int]:
        """The folds that are scored: every fold but the tuning fold."""
        return [f for f in self.models if f != TUNING_FOLD]

    def trains_on(self, held_out: int) -> np.ndarray:
        """bool ``[len(rows)]``: the rows the model held out on ``held_out`` trains on."""
        kept = (self.folds != CALIBRATION) & (self.folds != held_out)
        return kept & (self.folds != TUNING_FOLD) if self.holdout else kept

    def tuning_view_splits(self) -> np.ndarray:
        """The split of each row for tuning: fold 0 ``val``, the rest ``train`` (calibration unused)."""
        return np.where(self.folds == CALIBRATION, UNUSED,
                        np.where(self.folds == TUNING_FOLD, "val", "train"))

    def fit_rows(self) -> np.ndarray:
        """Feature-set row numbers every final fit may use: train+val less the calibration slice."""
        return self.rows[self.folds != CALIBRATION]


def calibration_slice(labels: np.ndarray, groups: list[str], fraction: float, seed: int
                      ) -> np.ndarray:
    """bool ``[N]``: about ``fraction`` of each class's content groups, in seeded hash order.

    A class keeps at least two groups for the folds; whole groups move, so a copy of a
    calibration row is never trained on.

    >>> calibration_slice(np.array([0] * 10 + [1] * 3), [str(i) for i in range(13)], 0.2, 0).sum()
    np.int64(3)

    (two of the ten rows of class 0; one of class 1's three, which keeps two for the folds)
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
    if calibrate.sum() < MIN_CALIBRATION_ROWS:  # a temperature from a handful of rows is noise
        calibrate[:] = False
    folds = np.full(len(rows), CALIBRATION, dtype=np.int64)
    rest = ~calibrate
    folds[rest] = stratified_folds(labels[rest], fs.index["id"].to_numpy()[rows][rest], auto.folds,
                                   cfg.seed, groups=[g for g, r in zip(groups, rest, strict=True) if r])
    return FoldPlan(rows, folds, auto.folds, holdout=int(rest.sum()) > auto.holdout_above)


def with_splits(fs: FeatureSet, rows: np.ndarray, splits: np.ndarray) -> FeatureSet:
    """``fs`` with ``rows`` given ``splits`` and every other row ``unused``."""
    split = np.full(len(fs.index), UNUSED, dtype=object)
    split[rows] = splits
    return dataclasses.replace(fs, index=fs.index.assign(split=split))


@dataclass
class FoldFit:
    """One candidate's cross-fit: the fold models that ship and the honest out-of-fold scores.

    ``heads``: one model per fold in ``plan.models``, each at its own best epoch; ``oof``
    ``[len(plan.rows), C]``: each scored fold's probabilities at its leave-one-fold-out
    epoch (NaN elsewhere); ``fold_scores``: their macro-F1, one per scored fold.
    """

    heads: list[FusionHead]
    ship_epoch: int  # the median of the fold models' best epochs (a refit trains this long)
    ship_value: tuple[float, float]
    oof: np.ndarray
    fold_scores: list[float]
    epochs_run: int
    seconds: float
    history: list[float] = field(default_factory=list)  # the folds' mean macro-F1 per epoch
    curves: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # fold: (F1, loss)/epoch
    read_at: dict[int, int] = field(default_factory=dict)  # scored fold: the epoch it was read at


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
    models = plan.models
    heads = []
    for f in models:
        view = with_splits(fs, plan.rows, np.where(plan.trains_on(f), "train", UNUSED))
        heads.append(start_training(view, fusion, train, seed + f, modalities))
    evaluated = with_splits(fs, plan.rows, np.where(plan.folds != CALIBRATION, "val", UNUSED))
    inputs = evaluated.split_inputs("val", modalities, heads[0][0].spec.token_inputs)
    y = inputs.labels.numpy()
    fold_of = plan.folds[plan.folds != CALIBRATION]
    at = {f: fold_of == f for f in range(plan.k)}
    n_classes = len(fs.labels)
    # Each model is scored after every epoch on its own fold (and, in a holdout, on fold 0).
    watched = [[f, TUNING_FOLD] if plan.holdout else [f] for f in models]
    views = [{fold: inputs.select(torch.from_numpy(np.flatnonzero(at[fold]))) for fold in folds}
             for folds in watched]
    selects_on = [TUNING_FOLD if plan.holdout else f for f in models]
    best_ship, stale, history = (-1.0, math.inf), 0, []
    curves: dict[int, list[tuple[float, float]]] = {f: [] for f in range(plan.k)}
    read_at = {f: 0 for f in plan.scored}
    best_choice = {f: (-1.0, math.inf) for f in plan.scored}
    best_own = [(-1.0, math.inf)] * len(models)
    oof_at = {f: np.full((int(at[f].sum()), n_classes), np.nan) for f in plan.scored}
    shipped_states, shipped_epochs = [None] * len(models), [0] * len(models)
    epoch = 0
    for epoch in range(1, train.epochs + 1):
        scores: dict[int, tuple[float, float]] = {}
        probs: dict[int, np.ndarray] = {}
        for i, (head, data, targets, optimiser, generator) in enumerate(heads):
            train_epoch(head, data, targets, optimiser, generator, fusion, train)
            for fold, view in views[i].items():
                held_out = predict_split(head, view)
                probs[fold], scores[fold] = held_out.probs, (held_out.macro_f1, held_out.nll)
        if plan.holdout:
            ship = scores[TUNING_FOLD]
            choices = {f: ship for f in plan.scored}
        else:
            ship = _mean(scores.values())
            choices = {f: _mean(s for g, s in scores.items() if g != f) for f in plan.scored}
        history.append(ship[0])
        for fold, score in scores.items():
            curves[fold].append(score)
        for f in plan.scored:  # scored: at an epoch chosen without fold f's own score
            if _better(choices[f], best_choice[f]):
                best_choice[f], oof_at[f], read_at[f] = choices[f], probs[f], epoch
        for i in range(len(models)):  # shipped: each model at its own best epoch
            if _better(scores[selects_on[i]], best_own[i]):
                best_own[i], shipped_epochs[i] = scores[selects_on[i]], epoch
                shipped_states[i] = copy.deepcopy(heads[i][0].state_dict())
        if _better(ship, best_ship):
            best_ship, stale = ship, 0
        else:
            stale += 1
        if on_epoch:
            on_epoch(epoch, train.epochs)
        if stale >= train.patience:
            break
    oof = np.full((len(plan.rows), n_classes), np.nan)
    in_cv = np.flatnonzero(plan.folds != CALIBRATION)
    fold_scores = []
    for f in plan.scored:
        oof[in_cv[at[f]]] = oof_at[f]
        fold_scores.append(macro_f1(y[at[f]], oof_at[f].argmax(-1), n_classes))
    shipped = []
    for (head, *_), state in zip(heads, shipped_states, strict=True):
        head.load_state_dict(state)
        shipped.append(head.eval())
    return FoldFit(shipped, int(np.median(shipped_epochs)), best_ship, oof, fold_scores,
                   epoch, time.perf_counter() - started, history,
                   {f: c for f, c in curves.items() if c}, read_at)


def _mean(values) -> tuple[float, float]:
    values = list(values)
    return (float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values])))
