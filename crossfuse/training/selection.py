"""``fusion.method: auto`` — choose the model by cross-fitting over train+val, honestly.

The candidates are one linear probe per modality alone (``unimodal:<m>``), the configured
fusion methods (``fusion.auto.candidates``: by default the ``linear`` probe of all
modalities and the ``late`` network) and a weighted ensemble of them.
:func:`crossfuse.training.crossfit.fold_plan` first sets a calibration slice aside
(``fusion.auto.calibration_fraction``: no candidate ever trains on it; the shipped
model's temperature is fitted there) and deals the rest into content-grouped, stratified
folds. Fold 0 is the tuning fold: a probe's penalty
(:func:`crossfuse.training.probe.tune_penalty`), or a network's settings and epoch count
(an Optuna search, ``fusion.auto.trials``), are chosen there, and fold 0 is never scored.
Each candidate is then cross-fitted (:func:`crossfuse.training.crossfit.cross_fit`): one
model per fold with exactly those settings, so no number a candidate is ranked by was
chosen on the rows it was scored on. Above ``fusion.auto.holdout_above`` rows a single
model trains without folds 0 and 1, is tuned on fold 0 and scored on fold 1.

Candidates race, cheapest first (:func:`candidate_names`): a network whose first
setting scores below the best tuning-fold score so far by more than twice that fold's
binomial noise (:func:`screen_threshold`) is dropped before its search and cross-fit
(``fusion.auto.race``), and listed as screened out.

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
every row outside the calibration slice with the same settings and epochs. The test
split is never touched.

Example
-------
>>> selection = select_model(fs, cfg)                          # doctest: +SKIP
>>> selection.winner.name, round(selection.winner.mean, 3)     # doctest: +SKIP
('unimodal:text', 0.662)
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossfuse.config import FusionConfig, RunConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionEnsemble, FusionHead
from crossfuse.metrics import SplitScores, macro_f1, predict_split
from crossfuse.training.candidate_checkpoints import CandidateCheckpoints
from crossfuse.training.crossfit import (
    CALIBRATION,
    TUNING_FOLD,
    FoldCallback,
    FoldPlan,
    cross_fit,
    fold_plan,
    with_splits,
)
from crossfuse.training.finetune import FINETUNED, auto_finetune_on, cross_fit_finetuned
from crossfuse.training.loop import fit_epochs
from crossfuse.training.probe import PROBE, fit_probe, tune_penalty
from crossfuse.training.search_progress import SearchProgress
from crossfuse.training.tuning import search, search_budget

log = logging.getLogger(__name__)

AUTO = "auto"
UNIMODAL = "unimodal:"
ENSEMBLE = "ensemble"
UNIMODAL_METHOD = PROBE  # one modality alone: a linear probe, the strongest simple model
_SIMPLICITY = {"unimodal": 0, "fused": 1, "ensemble": 2, "finetuned": 3}
CHOICE_RULE = ("The winner has the highest mean CV macro-F1, except that a fused model or the "
               "ensemble wins only if it beats the best single modality, fold by fold, by more "
               "than one standard error. A tie goes to the simpler model: a single modality, "
               "then a fused model in the order tried (the linear probe first), then the "
               "ensemble.")


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
    epochs: int = 0  # what each fold model trained for (chosen on the tuning fold); 0 for a probe
    tuning_score: float = 0.0  # macro-F1 of its chosen settings on the tuning fold
    members: dict[str, float] = field(default_factory=dict)
    searched: dict = field(default_factory=dict)  # the settings a search chose, if any
    settings: tuple[FusionConfig, TrainConfig] | None = None  # what each fold model trained with
    seconds: float = 0.0  # wall time of its cross-fit (every setting tried)
    tried: int = 1  # settings the search tried on the tuning fold

    @property
    def kind(self) -> str:
        if self.name == ENSEMBLE:
            return ENSEMBLE
        if self.name.startswith(FINETUNED):
            return "finetuned"
        return "unimodal" if self.name.startswith(UNIMODAL) else "fused"

    @property
    def penalty(self) -> float | None:
        """A linear probe's L2 penalty (chosen on the tuning fold); None for a network."""
        return self.searched.get("penalty")

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
                **({"epochs": self.epochs} if self.epochs else {}),
                **({"members": self.members} if self.members else {}),
                **({"searched": self.searched} if self.searched else {})}


@dataclass
class Selection:
    """The ranked candidates (best first) and how they were compared."""

    ranked: list[Candidate]
    plan: FoldPlan
    labels: np.ndarray  # class of each train+val row, aligned with the candidates' ``oof``
    seconds: float = 0.0
    screened: list[Screened] = field(default_factory=list)  # dropped by the race, not cross-fitted
    resumed: int = 0  # candidates taken from a killed run's checkpoints

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
        """In plain words: did fusion (and fine-tuning, when tried) help on this data, and by how much."""
        frozen = next((c for c in self.ranked if c.kind != "finetuned"), None)
        tuned = self.best("finetuned")
        if tuned is None or frozen is None:
            return self._fusion_verdict()
        if self.winner is tuned:
            return (f"fine-tuning helped: {tuned.name} scored {tuned.mean:.4f} CV macro-F1, "
                    f"{tuned.mean - frozen.mean:+.4f} over the best frozen candidate "
                    f"({frozen.name}, {frozen.mean:.4f}), more than the folds' noise")
        return (f"{self._fusion_verdict()}; fine-tuning did not earn its place: {tuned.name} "
                f"scored {tuned.mean:.4f} against {frozen.mean:.4f} frozen, not more than one "
                f"standard error of the folds above it")

    def _fusion_verdict(self) -> str:
        w = next(c for c in self.ranked if c.kind != "finetuned")
        single = self.best("unimodal")
        best = max((c for c in self.ranked if c.kind in ("fused", ENSEMBLE)), key=lambda c: c.mean,
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
                "verdict": self.verdict(), "ranked": [c.row() for c in self.ranked],
                "screened_out": [s.row() for s in self.screened],
                "resumed_candidates": self.resumed}


def candidate_names(cfg: RunConfig, modalities: list[str]) -> list[str]:
    """The candidates in the order they race: ``unimodal:<m>`` for each modality (if
    enabled), the configured linear probe, then the configured networks.

    The cheap probes go first, so the leader a network must keep up with is known early.

    >>> candidate_names(RunConfig(), ["image", "text"])
    ['unimodal:image', 'unimodal:text', 'linear', 'late']
    """
    auto = cfg.fusion.auto
    fused = list(dict.fromkeys(auto.candidates)) if len(modalities) > 1 else []
    names = [UNIMODAL + m for m in modalities] if auto.unimodal or not fused else []
    return names + sorted(fused, key=lambda n: n != PROBE)


def cross_validate(fs: FeatureSet, name: str, fusion: FusionConfig, train: TrainConfig, seed: int,
                   plan: FoldPlan, trials: int = 0, on_fold: FoldCallback | None = None,
                   prune_below: float | None = None) -> Candidate | Screened:
    """Choose ``name``'s settings on the tuning fold, then cross-fit them; see the module.

    A linear probe (``linear``, and every ``unimodal:<m>``) tunes its penalty
    (:func:`crossfuse.training.probe.tune_penalty`). Any other method runs a seeded Optuna
    search of ``trials`` trials (at least one: the config's settings) whose best trial
    also gives the epoch count every fold model trains for. Fused candidates train with
    ``fusion.auto.modality_dropout`` on every modality that ``train.modality_dropout``
    leaves unset: without it a placeholder is never trained, and a multiplicative method
    can answer nonsense for a row that lacks a modality. A network whose first setting
    scores below ``prune_below`` on the tuning fold is dropped (:class:`Screened`).
    """
    started = time.perf_counter()
    unimodal = name.startswith(UNIMODAL)
    modalities = [name[len(UNIMODAL):]] if unimodal else fs.modalities
    method = UNIMODAL_METHOD if unimodal else name
    if not unimodal and fusion.auto.modality_dropout > 0:
        rates = {m: train.modality_dropout.get(m, fusion.auto.modality_dropout) for m in modalities}
        train = train.model_copy(update={"modality_dropout": rates})
    fusion = fusion.model_copy(update={"method": method})
    tuning = with_splits(fs, plan.rows, plan.tuning_view_splits())
    if method == PROBE:
        tuned = tune_penalty(tuning, fusion, train, modalities)

        def probe(view: FeatureSet, f: int) -> FusionHead:
            if f == TUNING_FOLD:  # the tuning fit trained on exactly fold 0's training rows
                return tuned.head
            return fit_probe(view, fusion, train, modalities, tuned.penalty)
        fit = cross_fit(fs, plan, modalities, probe, on_fold)
        return Candidate(name, modalities, fit.fold_scores, fit.oof, heads=fit.heads,
                         searched={"penalty": tuned.penalty}, settings=(fusion, train),
                         tuning_score=tuned.value[0],
                         seconds=time.perf_counter() - started, tried=tuned.fits)
    best = search(tuning, fusion, train, seed, max(1, trials), fusion.search.epochs,
                  modalities=modalities, prune_below=prune_below)
    if best.pruned:
        return Screened(name, best.value, prune_below, time.perf_counter() - started)
    fusion, train, epochs = best.fusion, best.train, max(1, best.best_epoch)

    def network(view: FeatureSet, f: int) -> FusionHead:
        if f == TUNING_FOLD:  # the best trial: same rows, settings, seed and epochs
            return best.head
        return fit_epochs(view, fusion, train, seed + f, epochs, modalities)
    fit = cross_fit(fs, plan, modalities, network, on_fold)
    return Candidate(name, modalities, fit.fold_scores, fit.oof, heads=fit.heads, epochs=epochs,
                     searched=best.params if trials else {}, settings=(fusion, train),
                     tuning_score=best.value, seconds=time.perf_counter() - started,
                     tried=best.trials)


@dataclass(frozen=True)
class Screened:
    """A candidate dropped by the race: its first setting's tuning-fold macro-F1 trailed the
    leader's by more than twice that fold's noise, so it was not cross-fitted."""

    name: str
    tuning_score: float
    threshold: float
    seconds: float

    def row(self) -> dict:
        return {"candidate": self.name, "screened_out": True,
                "tuning_macro_f1": round(self.tuning_score, 6),
                "threshold": round(self.threshold, 6), "fit_seconds": round(self.seconds, 2)}


def screen_threshold(leader: float, rows: int) -> float:
    """The tuning-fold macro-F1 a new candidate's first setting must reach to race on:
    the leader's less two binomial standard errors on ``rows`` rows.

    >>> round(screen_threshold(0.87, 284), 3)        # 0.87 on 284 rows: noise of about 0.02
    0.83
    """
    return leader - 2 * math.sqrt(max(leader * (1 - leader), 1e-12) / max(rows, 1))


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
                 on_progress: Callable[[str], None] | None = None,
                 checkpoints: CandidateCheckpoints | None = None,
                 preprocessed: Path | None = None) -> Selection:
    """Cross-fit every candidate (and their ensemble); rank them, best first.

    With ``fusion.auto.finetune`` on (:func:`crossfuse.training.finetune.auto_finetune_on`)
    and the preprocessed items in ``preprocessed``, each of ``fusion.auto.finetune_candidates``
    is one more candidate (``finetune:<value>``: the linear head with the encoders
    fine-tuned), cross-fitted with its own encoders per fold, never in the ensemble.

    ``on_candidate`` sees each finished candidate; ``on_progress`` gets a progress line at
    most every 10 s (:class:`crossfuse.training.search_progress.SearchProgress`).
    ``checkpoints``: keep each finished candidate there, and take those a killed run
    finished from there (:mod:`crossfuse.training.candidate_checkpoints`).
    """
    started = time.perf_counter()
    plan = fold_plan(fs, cfg)
    names = candidate_names(cfg, fs.modalities)
    if auto_finetune_on(cfg, preprocessed):
        names += [FINETUNED + spec for spec in cfg.fusion.auto.finetune_candidates]
    trials = cfg.fusion.auto.trials
    if trials is None:
        trials = search_budget(int((plan.tuning_view_splits() == "train").sum()))
    report = SearchProgress(names, on_progress or log.info)
    tuning_rows = int((plan.folds == TUNING_FOLD).sum())
    candidates, screened = [], []
    for name in names:
        report.start(name)
        leader = max((c.tuning_score for c in candidates), default=None)
        threshold = (screen_threshold(leader, tuning_rows)
                     if cfg.fusion.auto.race and leader is not None else None)
        if name.startswith(FINETUNED):
            threshold = None  # not raced: its cost is in the fine-tuning, not a search
        result = checkpoints.load(name, threshold) if checkpoints else None
        if result is None and name.startswith(FINETUNED):
            result = finetuned_candidate(fs, cfg, plan, name, preprocessed, report.fold)
        elif result is None:
            result = cross_validate(fs, name, cfg.fusion, cfg.train, cfg.seed, plan, trials,
                                    on_fold=report.fold, prune_below=threshold)
            if checkpoints:
                checkpoints.save(name, threshold, result)
        report.done()
        if isinstance(result, Screened):
            log.info("candidate %s screened out: tuning-fold macro-F1 %.4f < %.4f (%.1f s)",
                     name, result.tuning_score, result.threshold, result.seconds)
            screened.append(result)
            continue
        candidates.append(result)
        log.info("candidate %s: CV macro-F1 %.4f ± %.4f (%.1f s)", name, result.mean, result.std,
                 result.seconds)
        if on_candidate:
            on_candidate(result)
    y = fs.index["label_idx"].to_numpy()[plan.rows]
    # Fine-tuned candidates read their own encoders' vectors: an ensemble of heads cannot hold them.
    frozen = [c for c in candidates if c.kind != "finetuned"]
    if cfg.fusion.auto.ensemble and len(frozen) > 1 and not plan.holdout:
        ranked = sorted(frozen, key=lambda c: -c.mean)
        candidates.append(ensemble_candidate(ranked, y, plan.folds, plan.scored,
                                             cfg.fusion.auto.ensemble_rounds))
        if on_candidate:
            on_candidate(candidates[-1])
    return Selection(ranked=rank(candidates), plan=plan, labels=y,
                     seconds=time.perf_counter() - started, screened=screened,
                     resumed=checkpoints.resumed if checkpoints else 0)


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Best first by mean CV macro-F1 (ties: the simpler kind); fusion must earn its place,
    and so must fine-tuning.

    The frozen winner is the best candidate that is unimodal or beats the best unimodal
    candidate, fold by fold, by more than one standard error (the one-standard-error rule
    of Breiman et al., applied to the paired fold differences): a gain the folds cannot
    tell from noise does not justify a second modality. A fine-tuned candidate wins only by
    beating that frozen winner the same way. The rest keep their order.

    >>> a = Candidate("concat", ["image", "text"], [0.90, 0.80, 0.95], np.zeros((0, 2)))
    >>> b = Candidate("unimodal:text", ["text"], [0.89, 0.81, 0.93], np.zeros((0, 2)))
    >>> [c.name for c in rank([a, b])]          # +0.007 mean gain, SE 0.009: not earned
    ['unimodal:text', 'concat']
    >>> t = Candidate("finetune:top:1", ["image", "text"], [0.95, 0.86, 0.97], np.zeros((0, 2)))
    >>> [c.name for c in rank([a, b, t])]       # +0.053 over text alone, SE 0.010: earned
    ['finetune:top:1', 'unimodal:text', 'concat']
    """
    ranked = sorted(candidates, key=lambda c: (-round(c.mean, 12), _SIMPLICITY[c.kind]))
    frozen = [c for c in ranked if c.kind != "finetuned"]
    single = next((c for c in frozen if c.kind == "unimodal"), None)
    winner = frozen[0] if frozen else ranked[0]
    if single is not None:
        winner = next(c for c in frozen if c.kind == "unimodal" or fusion_earns_its_place(c, single))
    order = [winner, *(c for c in ranked if c is not winner)]
    tuned = next((c for c in ranked if c.kind == "finetuned"), None)
    if tuned is not None and tuned.mean > winner.mean and fusion_earns_its_place(tuned, winner):
        order = [tuned, *(c for c in order if c is not tuned)]  # the frozen winner comes second
    return order


def fusion_earns_its_place(fused: Candidate, single: Candidate) -> bool:
    """The fold-wise gain of ``fused`` over ``single`` is above one standard error (or, with
    a single holdout, above zero). Also asks whether a fine-tuned candidate beats a frozen one."""
    gains = [f - s for f, s in zip(fused.fold_scores, single.fold_scores, strict=True)]
    mean = statistics.fmean(gains)
    if len(gains) < 2:
        return mean > 0
    return mean > statistics.stdev(gains) / len(gains) ** 0.5


def finetuned_candidate(fs: FeatureSet, cfg: RunConfig, plan: FoldPlan, name: str,
                        preprocessed: Path, on_fold: FoldCallback | None = None) -> Candidate:
    """``finetune:<value>`` cross-fitted (:func:`crossfuse.training.finetune.cross_fit_finetuned`)."""
    started = time.perf_counter()
    spec = name[len(FINETUNED):]
    scores, oof, epochs, tuning, tuned_cfg = cross_fit_finetuned(cfg, fs, plan, spec, PROBE,
                                                                  preprocessed, on_fold)
    return Candidate(name, fs.modalities, scores, oof, epochs=epochs, tuning_score=tuning,
                     searched={"finetune": spec}, settings=(tuned_cfg.fusion, tuned_cfg.train),
                     seconds=time.perf_counter() - started)


def bagged(candidate: Candidate, by_name: dict[str, Candidate]) -> FusionHead | FusionEnsemble:
    """What ships for ``candidate``: its fold models averaged (an ensemble: its members', weighted)."""
    return _assemble(candidate, by_name, lambda c: c.heads)


def refit(candidate: Candidate, by_name: dict[str, Candidate], fs: FeatureSet, plan: FoldPlan,
          seed: int) -> FusionHead | FusionEnsemble:
    """What ships for ``candidate`` refitted: one model per (member) candidate on every row
    outside the calibration slice.

    Each is trained with its candidate's settings for the epochs its fold models trained
    (:func:`crossfuse.training.loop.fit_epochs`), or a probe with its penalty; there is no
    row left to early-stop on.
    """
    rows = plan.fit_rows()
    everything = with_splits(fs, rows, np.full(len(rows), "train", dtype=object))

    def one(c: Candidate) -> list[FusionHead]:
        fusion, train = c.settings
        if c.penalty is not None:
            return [fit_probe(everything, fusion, train, c.modalities, c.penalty)]
        return [fit_epochs(everything, fusion, train, seed, c.epochs, modalities=c.modalities)]
    return _assemble(candidate, by_name, one)


def _assemble(candidate: Candidate, by_name: dict[str, Candidate],
              heads_of: Callable[[Candidate], list[FusionHead]]) -> FusionHead | FusionEnsemble:
    """One candidate's heads averaged, or an ensemble's members' heads, weighted."""
    if candidate.kind == "finetuned":
        raise ValueError(f"{candidate.name} ships with its own encoders: "
                         f"crossfuse.training.train.train_auto refits it")
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
