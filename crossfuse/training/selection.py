"""``fusion.method: auto`` — choose the model by cross-fitting over train+val, honestly.

The candidates are the configured fusion methods (``fusion.auto.candidates``), one head
per modality alone (``unimodal:<m>``, the ``concat`` head on that modality) and a weighted
ensemble of them. :func:`crossfuse.training.crossfit.fold_plan` first sets a calibration
slice aside (``fusion.auto.calibration_fraction``: no candidate ever trains on it; the
shipped model's temperature is fitted there) and deals the rest into content-grouped,
stratified folds. Each candidate's settings are searched on fold 0, the tuning fold
(``fusion.auto.trials``), which is then never scored; the candidate is cross-fitted
(:func:`crossfuse.training.crossfit.cross_fit`): one model per fold, trained in lockstep,
each scored fold (1..k-1) read at the epoch the *other* folds chose. No number a
candidate is ranked by was chosen on the rows it was scored on. Above
``fusion.auto.holdout_above`` rows a single model trains without folds 0 and 1, is tuned
and stopped on fold 0 and scored on fold 1.

The ensemble is Caruana et al.'s greedy selection with replacement (ICML 2004) over the
candidates' out-of-fold probabilities, scored nested: fold ``f``'s score uses weights
selected on the other folds. With a single holdout there is nothing to nest in, and the
ensemble is left out.

The winner is the candidate with the highest mean; a tie goes to the simpler model
(unimodal, then fused, then the ensemble), and a fused (or ensemble) leader must beat the
best single modality by more than one standard error of their fold-wise difference, or
the single modality wins (:func:`rank`). What ships (``fusion.auto.ship``) is either
``bagged``, the average of the winner's fold models (for the ensemble: of its members'
fold models, weighted), or ``refit``, the winner (each ensemble member) trained again on
every row outside the calibration slice for its folds' stopping epoch. The test split is
never touched.

Example
-------
>>> selection = select_model(fs, cfg)                          # doctest: +SKIP
>>> selection.winner.name, round(selection.winner.mean, 3)     # doctest: +SKIP
('unimodal:text', 0.662)
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from crossfuse.config import FusionConfig, RunConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionEnsemble, FusionHead
from crossfuse.metrics import SplitScores, macro_f1, predict_split
from crossfuse.training.crossfit import (
    CALIBRATION,
    FoldCallback,
    FoldPlan,
    cross_fit,
    fold_plan,
    with_splits,
)
from crossfuse.training.loop import fit_epochs
from crossfuse.training.search_progress import SearchProgress
from crossfuse.training.tuning import search, search_budget

log = logging.getLogger(__name__)

AUTO = "auto"
UNIMODAL = "unimodal:"
ENSEMBLE = "ensemble"
UNIMODAL_METHOD = "concat"  # on one modality: LayerNorm -> MLP, the plain single-modality head
_SIMPLICITY = {"unimodal": 0, "fused": 1, "ensemble": 2}


@dataclass
class Candidate:
    """One candidate's cross-validation: fold scores, out-of-fold probabilities, fold models.

    ``oof`` is ``[N_trainval, C]`` (rows never held out stay NaN); ``heads`` is one model
    per fold run, or for the ensemble ``members``: ``{candidate name: weight}``.
    """

    name: str
    modalities: list[str]
    fold_scores: list[float]
    oof: np.ndarray
    heads: list[FusionHead] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    members: dict[str, float] = field(default_factory=dict)
    searched: dict = field(default_factory=dict)  # the settings a search chose, if any
    settings: tuple[FusionConfig, TrainConfig] | None = None  # what each fold model trained with
    seconds: float = 0.0  # wall time of its cross-fit (every setting tried)
    tried: int = 1  # settings the search tried on the tuning fold

    @property
    def kind(self) -> str:
        if self.name == ENSEMBLE:
            return ENSEMBLE
        return "unimodal" if self.name.startswith(UNIMODAL) else "fused"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.fold_scores)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.fold_scores) if len(self.fold_scores) > 1 else 0.0

    def row(self) -> dict:
        """The candidate as a table row (what selection.json and the report show)."""
        return {"candidate": self.name, "kind": self.kind, "modalities": "+".join(self.modalities),
                "cv_macro_f1_mean": self.mean, "cv_macro_f1_std": self.std,
                "folds": [round(s, 6) for s in self.fold_scores],
                "fit_seconds": round(self.seconds, 2), "settings_tried": self.tried,
                **({"members": self.members} if self.members else {}),
                **({"searched": self.searched} if self.searched else {})}


@dataclass
class Selection:
    """The ranked candidates (best first) and how they were compared."""

    ranked: list[Candidate]
    plan: FoldPlan
    labels: np.ndarray  # class of each train+val row, aligned with the candidates' ``oof``
    seconds: float = 0.0

    @property
    def folds(self) -> int:
        """``k``, or 1 for a holdout (of which fold 0 tunes and is never scored)."""
        return 1 if self.plan.holdout else self.plan.k

    @property
    def holdout(self) -> bool:
        return self.plan.holdout

    @property
    def rows(self) -> int:
        """The rows the folds deal in: train+val less the calibration slice."""
        return int((self.plan.folds != CALIBRATION).sum())

    @property
    def seen(self) -> np.ndarray:
        """bool over train+val: the rows some fold was scored on."""
        return np.isin(self.plan.folds, self.plan.scored)

    @property
    def winner(self) -> Candidate:
        return self.ranked[0]

    def best(self, kind: str) -> Candidate | None:
        return next((c for c in self.ranked if c.kind == kind), None)

    def verdict(self) -> str:
        """In plain words: did fusion help on this data, and by how much."""
        w, single = self.winner, self.best("unimodal")
        best = max((c for c in self.ranked if c.kind != "unimodal"), key=lambda c: c.mean,
                   default=None)  # the best fused model or ensemble
        if single is None or best is None:
            return f"chose {w.name} (CV macro-F1 {w.mean:.4f} ± {w.std:.4f})"
        if w.kind == "unimodal":
            alone = w.name[len(UNIMODAL):]
            if best.mean <= w.mean:
                return (f"fusion did not help on this data: {alone} alone scored {w.mean:.4f} CV "
                        f"macro-F1, {w.mean - best.mean:.4f} above the best fused model "
                        f"({best.name}, {best.mean:.4f}); the model is {alone}-only")
            return (f"fusion did not help on this data: the best fused model ({best.name}, "
                    f"{best.mean:.4f}) scored only {best.mean - w.mean:+.4f} CV macro-F1 over "
                    f"{alone} alone ({w.mean:.4f}), within one standard error of the folds; "
                    f"the model is {alone}-only")
        return (f"fusion helped: {w.name} scored {w.mean:.4f} CV macro-F1, "
                f"{w.mean - single.mean:+.4f} over the best single modality "
                f"({single.name[len(UNIMODAL):]}, {single.mean:.4f})")

    def to_json(self) -> dict:
        return {"folds": self.folds, "holdout": self.holdout, "rows": self.rows,
                "scored_folds": self.plan.scored,
                "calibration_rows": int(len(self.plan.calibration_rows)),
                "seconds": round(self.seconds, 2), "winner": self.winner.name,
                "modalities": self.winner.modalities,
                "verdict": self.verdict(), "ranked": [c.row() for c in self.ranked]}


def candidate_names(cfg: RunConfig, modalities: list[str]) -> list[str]:
    """The configured fused candidates, then ``unimodal:<m>`` for each modality (if enabled)."""
    auto = cfg.fusion.auto
    names = list(dict.fromkeys(auto.candidates)) if len(modalities) > 1 else []
    if auto.unimodal or not names:
        names += [UNIMODAL + m for m in modalities]
    return names


def cross_validate(fs: FeatureSet, name: str, fusion: FusionConfig, train: TrainConfig, seed: int,
                   plan: FoldPlan, trials: int = 0, on_epoch: FoldCallback | None = None
                   ) -> Candidate:
    """Search ``name``'s settings on the tuning fold, then cross-fit it; see the module.

    Fused candidates train with ``fusion.auto.modality_dropout`` on every modality that
    ``train.modality_dropout`` leaves unset: without it a placeholder is never trained, and
    a multiplicative method can answer nonsense for a row that lacks a modality. With
    ``trials`` a seeded Optuna search picks the settings on the tuning fold (fold 0),
    which is then never scored.
    """
    started = time.perf_counter()
    unimodal = name.startswith(UNIMODAL)
    modalities = [name[len(UNIMODAL):]] if unimodal else fs.modalities
    method = UNIMODAL_METHOD if unimodal else name
    if not unimodal and fusion.auto.modality_dropout > 0:
        rates = {m: train.modality_dropout.get(m, fusion.auto.modality_dropout) for m in modalities}
        train = train.model_copy(update={"modality_dropout": rates})
    fusion = fusion.model_copy(update={"method": method})
    searched = {}
    if trials:
        tuning = with_splits(fs, plan.rows, plan.tuning_view_splits())
        best = search(tuning, fusion, train, seed, trials, fusion.search.epochs,
                      modalities=modalities)
        fusion, train, searched = best.fusion, best.train, best.params
    fit = cross_fit(fs, plan, fusion, train, seed, modalities, on_epoch)
    return Candidate(name, modalities, fit.fold_scores, fit.oof, heads=fit.heads,
                     best_epochs=[fit.ship_epoch], searched=searched, settings=(fusion, train),
                     seconds=time.perf_counter() - started, tried=max(1, trials))


def _score(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(macro-F1, -NLL): the selection objective, log-likelihood breaking macro-F1's plateaus."""
    s = SplitScores(labels=y, probs=probs / probs.sum(-1, keepdims=True))
    return s.macro_f1, -s.nll


def greedy_ensemble(oof: dict[str, np.ndarray], y: np.ndarray, rounds: int) -> dict[str, int]:
    """Caruana's ensemble selection with replacement: ``{candidate: times picked}``.

    ``oof`` holds each candidate's out-of-fold probabilities ``[N, C]`` on the same rows,
    ``y`` the true classes. Each round adds the candidate that most improves the average;
    the best prefix is returned, so its score is never below the best single candidate's.

    >>> y = np.array([0, 1, 1, 0])
    >>> a = np.array([[.9, .1], [.6, .4], [.2, .8], [.6, .4]])   # row 1 wrong
    >>> b = np.array([[.4, .6], [.1, .9], [.3, .7], [.8, .2]])   # row 0 wrong
    >>> sorted(greedy_ensemble({"a": a, "b": b}, y, rounds=3).items())  # each alone: 3 of 4 right
    [('a', 1), ('b', 2)]
    """
    names = list(oof)
    total = np.zeros_like(next(iter(oof.values())))
    picked: Counter = Counter()
    best_score, best_pick = None, Counter()
    for r in range(1, rounds + 1):
        trial = {n: _score(y, (total + oof[n]) / r) for n in names}
        name = max(names, key=lambda n: trial[n])  # ties: the earlier (better ranked) candidate
        picked[name] += 1
        total += oof[name]
        if best_score is None or trial[name] > best_score:
            best_score, best_pick = trial[name], Counter(picked)
    return dict(best_pick)


def ensemble_candidate(candidates: list[Candidate], y: np.ndarray, folds: np.ndarray,
                       held_out: list[int], rounds: int) -> Candidate:
    """The weighted ensemble of ``candidates`` as one more candidate, scored without bias.

    Fold ``f``'s score comes from weights selected on the other folds' out-of-fold
    predictions (nested), so the ensemble competes on equal terms with the single
    candidates; the weights that ship are selected on all folds.
    """
    def weights_on(rows: np.ndarray) -> dict[str, float]:
        picks = greedy_ensemble({c.name: c.oof[rows] for c in candidates}, y[rows], rounds)
        return {name: n / sum(picks.values()) for name, n in picks.items()}

    def mix(weights: dict[str, float]) -> np.ndarray:
        return sum(w * by_name[n].oof for n, w in weights.items())

    by_name = {c.name: c for c in candidates}
    seen = np.isin(folds, held_out)
    oof = np.full_like(candidates[0].oof, np.nan)
    scores = []
    for f in held_out:
        inner = weights_on(seen & (folds != f))
        oof[folds == f] = mix(inner)[folds == f]
        scores.append(macro_f1(y[folds == f], oof[folds == f].argmax(-1), oof.shape[1]))
    weights = weights_on(seen)
    modalities = list(dict.fromkeys(m for n in weights for m in by_name[n].modalities))
    return Candidate(ENSEMBLE, modalities, scores, oof, members=weights)


def select_model(fs: FeatureSet, cfg: RunConfig,
                 on_candidate: Callable[[Candidate], None] | None = None,
                 on_progress: Callable[[str], None] | None = None) -> Selection:
    """Cross-fit every candidate (and their ensemble); rank them, best first.

    ``on_candidate`` sees each finished candidate; ``on_progress`` gets a progress line at
    most every 10 s (:class:`crossfuse.training.search_progress.SearchProgress`).
    """
    started = time.perf_counter()
    plan = fold_plan(fs, cfg)
    names = candidate_names(cfg, fs.modalities)
    trials = cfg.fusion.auto.trials
    if trials is None:
        trials = search_budget(int((plan.tuning_view_splits() == "train").sum()))
    report = SearchProgress(names, on_progress or log.info)
    candidates = []
    for name in names:
        report.start(name)
        candidates.append(cross_validate(fs, name, cfg.fusion, cfg.train, cfg.seed, plan,
                                         trials, on_epoch=report.epoch))
        report.done()
        log.info("candidate %s: CV macro-F1 %.4f ± %.4f (%.1f s)", name, candidates[-1].mean,
                 candidates[-1].std, candidates[-1].seconds)
        if on_candidate:
            on_candidate(candidates[-1])
    y = fs.index["label_idx"].to_numpy()[plan.rows]
    if cfg.fusion.auto.ensemble and len(candidates) > 1 and not plan.holdout:
        ranked = sorted(candidates, key=lambda c: -c.mean)
        candidates.append(ensemble_candidate(ranked, y, plan.folds, plan.scored,
                                             cfg.fusion.auto.ensemble_rounds))
        if on_candidate:
            on_candidate(candidates[-1])
    return Selection(ranked=rank(candidates), plan=plan, labels=y,
                     seconds=time.perf_counter() - started)


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Best first by mean CV macro-F1 (ties: the simpler kind); fusion must earn its place.

    The winner is the best candidate that is unimodal or beats the best unimodal
    candidate, fold by fold, by more than one standard error (the one-standard-error rule
    of Breiman et al., applied to the paired fold differences): a gain the folds cannot
    tell from noise does not justify a second modality. The rest keep their order.

    >>> a = Candidate("concat", ["image", "text"], [0.90, 0.80, 0.95], np.zeros((0, 2)))
    >>> b = Candidate("unimodal:text", ["text"], [0.89, 0.81, 0.93], np.zeros((0, 2)))
    >>> [c.name for c in rank([a, b])]          # +0.007 mean gain, SE 0.009: not earned
    ['unimodal:text', 'concat']
    """
    ranked = sorted(candidates, key=lambda c: (-round(c.mean, 12), _SIMPLICITY[c.kind]))
    single = next((c for c in ranked if c.kind == "unimodal"), None)
    if single is None:
        return ranked
    winner = next(c for c in ranked if c.kind == "unimodal" or fusion_earns_its_place(c, single))
    return [winner, *(c for c in ranked if c is not winner)]


def fusion_earns_its_place(fused: Candidate, single: Candidate) -> bool:
    """The fold-wise gain of ``fused`` over ``single`` is above one standard error (or, with
    a single holdout, above zero)."""
    gains = [f - s for f, s in zip(fused.fold_scores, single.fold_scores, strict=True)]
    mean = statistics.fmean(gains)
    if len(gains) < 2:
        return mean > 0
    return mean > statistics.stdev(gains) / len(gains) ** 0.5


def bagged(candidate: Candidate, by_name: dict[str, Candidate]) -> FusionHead | FusionEnsemble:
    """What ships for ``candidate``: its fold models averaged (an ensemble: its members', weighted)."""
    return _assemble(candidate, by_name, lambda c: c.heads)


def refit(candidate: Candidate, by_name: dict[str, Candidate], fs: FeatureSet, plan: FoldPlan,
          seed: int) -> FusionHead | FusionEnsemble:
    """What ships for ``candidate`` refitted: one model per (member) candidate on every row
    outside the calibration slice.

    Each is trained with its candidate's settings for the median of its folds' best epochs
    (:func:`crossfuse.training.loop.fit_epochs`); there is no row left to early-stop on.
    """
    rows = plan.fit_rows()
    everything = with_splits(fs, rows, np.full(len(rows), "train", dtype=object))

    def one(c: Candidate) -> list[FusionHead]:
        fusion, train = c.settings
        epochs = int(np.median(c.best_epochs))
        return [fit_epochs(everything, fusion, train, seed, epochs, modalities=c.modalities)]
    return _assemble(candidate, by_name, one)


def _assemble(candidate: Candidate, by_name: dict[str, Candidate],
              heads_of: Callable[[Candidate], list[FusionHead]]) -> FusionHead | FusionEnsemble:
    """One candidate's heads averaged, or an ensemble's members' heads, weighted."""
    if candidate.kind != ENSEMBLE:
        heads = heads_of(candidate)
        return heads[0] if len(heads) == 1 else FusionEnsemble(heads, [1.0] * len(heads))
    members, weights = [], []
    for name, weight in candidate.members.items():
        heads = heads_of(by_name[name])
        members += heads
        weights += [weight / len(heads)] * len(heads)
    return FusionEnsemble(members, weights)


def shipped(selection: Selection, fs: FeatureSet, cfg: RunConfig, candidate: Candidate | None = None
            ) -> FusionHead | FusionEnsemble:
    """The model that ships for ``candidate`` (default: the winner) under ``fusion.auto.ship``."""
    candidate = candidate or selection.winner
    by_name = {c.name: c for c in selection.ranked}
    if cfg.fusion.auto.ship == "refit":
        return refit(candidate, by_name, fs, selection.plan, cfg.seed)
    return bagged(candidate, by_name)


def calibration_scores(model: FusionHead | FusionEnsemble, fs: FeatureSet, plan: FoldPlan
                       ) -> SplitScores:
    """``model``'s predictions on the calibration slice: rows none of its members trained on."""
    rows = plan.calibration_rows
    view = with_splits(fs, rows, np.full(len(rows), "val", dtype=object))
    return predict_split(model, view.split_inputs("val", list(model.spec.dims),
                                                  model.spec.token_inputs))
