"""Cross-fitting one candidate: one model per fold, scored on rows no choice saw.

A :class:`FoldPlan` deals the train+val rows into a calibration slice (held out of every
fit: the shipped model's temperature is fitted there) and ``k`` content-grouped,
stratified folds. Fold 0 is the **tuning fold**: a candidate's settings *and* its epoch
count are chosen there (:func:`crossfuse.training.tuning.search`, or a linear probe's
penalty, :func:`crossfuse.training.probe.tune_penalty`), so fold 0 is never scored.
Then :func:`cross_fit` trains one model per fold with exactly those settings, for exactly
that many epochs: no early stopping looks at a held-out fold, so folds ``1..k-1`` are
scored by models that nothing chose on them, and the fold models are what ships.

Above ``fusion.auto.holdout_above`` rows one model is trained, without folds 0 and 1: it
is tuned on fold 0 and scored on fold 1.

Example
-------
>>> plan = fold_plan(fs, cfg)                                             # doctest: +SKIP
>>> fit = cross_fit(fs, plan, ["image", "text"],
...                 lambda view, f: fit_epochs(view, fusion, train, f, epochs=17))  # doctest: +SKIP
>>> fit.fold_scores                                                       # doctest: +SKIP
[0.88, 0.9, 0.93, 0.87]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from crossfuse.config import RunConfig
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionHead
from crossfuse.metrics import macro_f1, predict_split
from crossfuse.training.folds import content_groups, order_key, stratified_folds

CALIBRATION = -1  # the fold number of calibration rows: no model trains on them
TUNING_FOLD = 0  # settings are searched here; never scored
# Fewer rows than this and no slice is held out: they would fit T to noise and cost the
# folds rows they need; the model ships uncalibrated (T = 1) and says so.
MIN_CALIBRATION_ROWS = 30
UNUSED = "unused"

FoldCallback = Callable[[int, int], None]  # (models done, models)


@dataclass(frozen=True)
class FoldPlan:
    """Which train+val rows calibrate, which fold each other row is in, and who is scored.

    ``rows``: feature-set row numbers of train+val; ``folds``: each one's fold (``-1`` for
    the calibration slice); ``k`` folds; ``holdout``: one model, tuned on fold 0
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


FitOne = Callable[[FeatureSet, int], FusionHead]  # (view with its train split, fold) -> model


@dataclass
class FoldFit:
    """One candidate's cross-fit: the fold models that ship and the honest out-of-fold scores.

    ``heads``: one model per fold in ``plan.models``; ``oof`` ``[len(plan.rows), C]``: each
    scored fold's probabilities from the model that did not train on it (NaN elsewhere);
    ``fold_scores``: their macro-F1, one per scored fold.
    """

    heads: list[FusionHead]
    oof: np.ndarray
    fold_scores: list[float]
    seconds: float


def cross_fit(fs: FeatureSet, plan: FoldPlan, modalities: list[str], fit_one: FitOne,
              on_fold: FoldCallback | None = None) -> FoldFit:
    """One model per fold of ``plan.models``, each scored on its held-out fold if that is scored.

    Parameters
    ----------
    fs: features; only ``plan.rows`` are read (the test split never is).
    plan: the folds (:func:`fold_plan`).
    modalities: what the models read.
    fit_one: ``fit_one(view, fold)`` trains a model on ``view``'s train split, the rows
        :meth:`FoldPlan.trains_on` gives for ``fold``, with settings chosen beforehand on
        the tuning fold; nothing in it may look at the held-out fold.
    on_fold: called as ``on_fold(models done, models)`` after each.
    """
    started = time.perf_counter()
    evaluated = with_splits(fs, plan.rows, np.where(plan.folds != CALIBRATION, "val", UNUSED))
    inputs = evaluated.split_inputs("val", modalities)
    y = inputs.labels.numpy()
    fold_of = plan.folds[plan.folds != CALIBRATION]
    in_cv = np.flatnonzero(plan.folds != CALIBRATION)
    oof = np.full((len(plan.rows), len(fs.labels)), np.nan)
    heads, fold_scores = [], []
    for done, f in enumerate(plan.models, start=1):
        view = with_splits(fs, plan.rows, np.where(plan.trains_on(f), "train", UNUSED))
        head = fit_one(view, f)
        heads.append(head)
        if f in plan.scored:
            at = np.flatnonzero(fold_of == f)
            probs = predict_split(head, inputs.select(torch.from_numpy(at))).probs
            oof[in_cv[at]] = probs
            fold_scores.append(macro_f1(y[at], probs.argmax(-1), len(fs.labels)))
        if on_fold:
            on_fold(done, len(plan.models))
    return FoldFit(heads, oof, fold_scores, time.perf_counter() - started)
