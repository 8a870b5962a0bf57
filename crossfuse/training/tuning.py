"""Per-method hyper-parameter search on the validation split (Optuna TPE, seeded, fixed budget).

Every method shares a search over learning rate, weight decay (1e-6 to 1e-1), dropout,
hidden width and the small-data regularisers — a per-modality bottleneck, input dropout
and label smoothing; methods with their own knobs add them (``tensor_dim``, ``rank``, ``factor``, ``layers``).
The objective is the best validation macro-F1 of a training run of ``search.epochs``
epochs; the test split is never touched.

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
from crossfuse.training.loop import fit

TrialCallback = Callable[[int, dict, float], None]

log = logging.getLogger(__name__)

METHOD_OPTIONS: dict[str, dict[str, list[int]]] = {
    "tensor": {"tensor_dim": [8, 16, 32]},
    "lowrank": {"rank": [2, 4, 8, 16]},
    "mfb": {"factor": [2, 4, 8]},
    "transformer": {"layers": [1, 2, 3]},
}


@dataclass(frozen=True)
class SearchResult:
    fusion: FusionConfig
    train: TrainConfig
    value: float
    params: dict
    trials: int


def suggest(trial, fusion: FusionConfig, train: TrainConfig) -> tuple[FusionConfig, TrainConfig]:
    """Draw one configuration for ``fusion.method`` from the search space."""
    options = dict(fusion.options)
    for name, choices in METHOD_OPTIONS.get(fusion.method, {}).items():
        options[name] = trial.suggest_categorical(name, choices)
    fusion = fusion.model_copy(update={
        "hidden_dim": trial.suggest_categorical("hidden_dim", [128, 256, 512]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.6),
        "options": options,
        # Small-data regularisers: a per-modality bottleneck and input dropout.
        "bottleneck": trial.suggest_categorical("bottleneck", [0, 64, 128, 256]),
        "input_dropout": trial.suggest_float("input_dropout", 0.0, 0.5)})
    train = train.model_copy(update={
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        "label_smoothing": trial.suggest_categorical("label_smoothing", [0.0, 0.1, 0.2])})
    return fusion, train


def search_budget(rows: int) -> int:
    """Trials for ``rows`` training rows: many cheap trials on small data, a few on large.

    >>> [search_budget(n) for n in (100, 600, 2000, 50000)]
    [12, 5, 2, 2]
    """
    return int(min(12, max(2, round(3000 / max(rows, 1)))))


def search(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, seed: int, trials: int,
           epochs: int = 40, modalities: list[str] | None = None,
           on_trial: TrialCallback | None = None) -> SearchResult:
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
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_train = train.model_copy(update={"epochs": min(epochs, train.epochs)})

    def objective(trial) -> float:
        f, t = suggest(trial, fusion, trial_train)
        _, result = fit(fs, f, t, seed, modalities=modalities)
        if on_trial:
            on_trial(trial.number, dict(trial.params), result.best_val_macro_f1)
        return result.best_val_macro_f1

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best_fusion, best_train = suggest(optuna.trial.FixedTrial(study.best_params), fusion, train)
    log.info("search %s: best val macro-F1 %.4f with %s", fusion.method, study.best_value,
             study.best_params)
    return SearchResult(fusion=best_fusion, train=best_train, value=study.best_value,
                        params=dict(study.best_params), trials=trials)
