"""Per-method hyper-parameter search on the validation split (Optuna TPE, seeded, fixed budget).

Every method shares a search over learning rate, weight decay (1e-6 to 1e-1), dropout,
hidden width and the small-data regularisers — a per-modality bottleneck, input dropout
and label smoothing; methods with their own knobs add them (their ``tunable``:
``tensor_dim``, ``rank``, ``factor``, ``layers``). The first trial is always the starting
config itself, so the search never picks settings that score below it on the search's
split; with the tiny budgets large data gets, that matters. The objective is the best
validation macro-F1 of a training run of ``search.epochs`` epochs; the test split is
never touched.

Example
-------
>>> best = search(fs, cfg.fusion, cfg.train, seed=0, trials=8)           # doctest: +SKIP
>>> best.fusion.dropout, best.train.lr, best.value                       # doctest: +SKIP
(0.41, 0.0012, 0.88)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FUSION_METHODS, FusionHead
from crossfuse.training.loop import fit

TrialCallback = Callable[[int, dict, float], None]

log = logging.getLogger(__name__)

HIDDEN_DIMS = [128, 256, 512]
BOTTLENECKS = [0, 64, 128, 256]
LABEL_SMOOTHING = [0.0, 0.1, 0.2]
RANGES = {"dropout": (0.0, 0.6), "input_dropout": (0.0, 0.5), "lr": (1e-4, 3e-3),
          "weight_decay": (1e-6, 1e-1)}


@dataclass(frozen=True)
class SearchResult:
    fusion: FusionConfig
    train: TrainConfig
    value: float
    params: dict
    trials: int
    best_epoch: int = 0  # the best trial's early-stopped epoch on the validation split
    head: FusionHead | None = None  # the best trial's model at that epoch
    pruned: bool = False  # stopped after its first trial, which scored below ``prune_below``


def suggest(trial, fusion: FusionConfig, train: TrainConfig) -> tuple[FusionConfig, TrainConfig]:
    """Draw one configuration for ``fusion.method`` from the search space."""
    options = dict(fusion.options)
    for name, (_, choices) in _tunable(fusion.method).items():
        options[name] = trial.suggest_categorical(name, choices)
    fusion = fusion.model_copy(update={
        "hidden_dim": trial.suggest_categorical("hidden_dim", HIDDEN_DIMS),
        "dropout": trial.suggest_float("dropout", *RANGES["dropout"]),
        "options": options,
        # Small-data regularisers: a per-modality bottleneck and input dropout.
        "bottleneck": trial.suggest_categorical("bottleneck", BOTTLENECKS),
        "input_dropout": trial.suggest_float("input_dropout", *RANGES["input_dropout"])})
    train = train.model_copy(update={
        "lr": trial.suggest_float("lr", *RANGES["lr"], log=True),
        "weight_decay": trial.suggest_float("weight_decay", *RANGES["weight_decay"], log=True),
        "label_smoothing": trial.suggest_categorical("label_smoothing", LABEL_SMOOTHING)})
    return fusion, train


def _tunable(method: str) -> dict[str, tuple[int, list[int]]]:
    cls = FUSION_METHODS.get(method)
    return cls.tunable if cls is not None else {}


def starting_params(fusion: FusionConfig, train: TrainConfig) -> dict:
    """The starting config in the search space's terms (the values that lie inside it).

    >>> starting_params(FusionConfig(method="mfb"), TrainConfig())["factor"]
    4
    """
    values = {"hidden_dim": fusion.hidden_dim, "dropout": fusion.dropout,
              "bottleneck": fusion.bottleneck, "input_dropout": fusion.input_dropout,
              "lr": train.lr, "weight_decay": train.weight_decay,
              "label_smoothing": train.label_smoothing}
    choices = {"hidden_dim": HIDDEN_DIMS, "bottleneck": BOTTLENECKS,
               "label_smoothing": LABEL_SMOOTHING}
    for name, (default, options) in _tunable(fusion.method).items():
        values[name] = fusion.options.get(name, default)
        choices[name] = options
    return {k: v for k, v in values.items()
            if (v in choices[k] if k in choices else RANGES[k][0] <= v <= RANGES[k][1])}


def search_budget(rows: int) -> int:
    """Trials for ``rows`` training rows: many cheap trials on small data, a few on large.

    >>> [search_budget(n) for n in (100, 600, 2000, 50000)]
    [12, 5, 2, 2]
    """
    return int(min(12, max(2, round(3000 / max(rows, 1)))))


def search(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, seed: int, trials: int,
           epochs: int = 40, modalities: list[str] | None = None,
           on_trial: TrialCallback | None = None, prune_below: float | None = None
           ) -> SearchResult:
    """Run ``trials`` seeded TPE trials; return the best configs (with the full epoch budget).

    Parameters
    ----------
    fs: features (train and val splits used).
    fusion, train: starting configs; the method and everything not searched are kept.
    seed: seeds the sampler and every trial's training.
    trials: number of trials (> 0).
    epochs: epoch budget per trial (early stopping still applies).
    modalities: restrict to these modalities (unimodal baselines).
    on_trial: called as ``on_trial(number, params, value)`` after each trial.
    prune_below: stop after the first trial (the starting config) when it scores below
        this: a race between methods drops one that clearly trails (``auto``).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_train = train.model_copy(update={"epochs": min(epochs, train.epochs)})

    best: dict[str, FusionHead] = {}

    def objective(trial) -> float:
        f, t = suggest(trial, fusion, trial_train)
        head, result = fit(fs, f, t, seed, modalities=modalities)
        trial.set_user_attr("best_epoch", result.best_epoch)
        if not best or result.best_val_macro_f1 > trial.study.best_value:
            best["head"] = head
        if on_trial:
            on_trial(trial.number, dict(trial.params), result.best_val_macro_f1)
        if prune_below is not None and trial.number == 0 and result.best_val_macro_f1 < prune_below:
            trial.study.stop()
        return result.best_val_macro_f1

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(starting_params(fusion, train))  # a search never does worse than no search
    study.optimize(objective, n_trials=trials)
    best_fusion, best_train = suggest(optuna.trial.FixedTrial(study.best_params), fusion, train)
    log.info("search %s: best val macro-F1 %.4f with %s", fusion.method, study.best_value,
             study.best_params)
    return SearchResult(fusion=best_fusion, train=best_train, value=study.best_value,
                        params=dict(study.best_params), trials=len(study.trials),
                        best_epoch=int(study.best_trial.user_attrs["best_epoch"]),
                        head=best["head"],
                        pruned=prune_below is not None and study.trials[0].value < prune_below)
