"""``fusion.method: auto`` — choose the model by stratified cross-validation over train+val.

The candidates are the configured fusion methods (``fusion.auto.candidates``), one head
per modality alone (``unimodal:<m>``, the ``concat`` head on that modality) and a weighted
ensemble of them. Each candidate is
trained once per fold, early-stopped on the held-out fold, and scored by the macro-F1 of
its out-of-fold predictions: mean ± std over folds. Above ``fusion.auto.holdout_above``
rows only the first fold is held out (a single stratified holdout).

Before its cross-validation each candidate gets a seeded Optuna search
(:mod:`crossfuse.training.tuning`, regularisers included) on the first fold's split, with
``fusion.auto.trials`` trials or, by default, a budget that shrinks as the data grows. The
search sees the first fold's held-out rows, which the CV then scores too: a small optimism
that every candidate shares alike.

The ensemble is Caruana et al.'s greedy selection with replacement (ICML 2004) over the
candidates' out-of-fold probabilities: its first pick is the best single candidate, and
the best prefix is kept, so on the rows it is selected on its score is never below that
candidate's. To compete fairly it is scored nested: fold ``f``'s score uses weights
selected on the other folds. With a single holdout there is nothing to nest in, and the
ensemble is left out.

The winner is the candidate with the highest mean; a tie goes to the simpler model
(unimodal, then fused, then the ensemble), and a fused (or ensemble) leader must beat the
best single modality by more than one standard error of their fold-wise difference, or
the single modality wins (:func:`rank`). What ships (``fusion.auto.ship``) is either
``bagged``, the average of the winner's fold models (for the ensemble: of its members'
fold models, weighted), each early-stopped on data it did not train on, or ``refit``, the
winner (each ensemble member) trained again on all of train+val for the median of its
folds' best epochs. Either way its temperature is fitted on the out-of-fold predictions.
The test split is never touched.

Example
-------
>>> selection = select_model(fs, cfg)                          # doctest: +SKIP
>>> selection.winner.name, round(selection.winner.mean, 3)     # doctest: +SKIP
('unimodal:text', 0.662)
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossfuse.config import FusionConfig, RunConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionEnsemble, FusionHead
from crossfuse.metrics import SplitScores, macro_f1, predict_split
from crossfuse.progress import progress
from crossfuse.training.folds import stratified_folds
from crossfuse.training.loop import fit, fit_epochs
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
    checkpoints: list[Path] = field(default_factory=list)
    searched: dict = field(default_factory=dict)  # the settings a search chose, if any
    settings: tuple[FusionConfig, TrainConfig] | None = None  # what each fold model trained with

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
                **({"members": self.members} if self.members else {}),
                **({"searched": self.searched} if self.searched else {})}


@dataclass
class Selection:
    """The ranked candidates (best first) and how they were compared."""

    ranked: list[Candidate]
    folds: int
    holdout: bool
    rows: int
    labels: np.ndarray  # class of each train+val row, aligned with the candidates' ``oof``
    seen: np.ndarray  # bool: the rows that were held out once (all of them unless holdout)

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
                "winner": self.winner.name, "modalities": self.winner.modalities,
                "verdict": self.verdict(), "ranked": [c.row() for c in self.ranked]}


def candidate_names(cfg: RunConfig, modalities: list[str]) -> list[str]:
    """The configured fused candidates, then ``unimodal:<m>`` for each modality (if enabled)."""
    auto = cfg.fusion.auto
    names = list(dict.fromkeys(auto.candidates)) if len(modalities) > 1 else []
    if auto.unimodal or not names:
        names += [UNIMODAL + m for m in modalities]
    return names


def fold_plan(fs: FeatureSet, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(train+val row numbers, their fold, the folds to hold out in turn)."""
    rows = np.flatnonzero(fs.index["split"].isin(["train", "val"]).to_numpy())
    auto = cfg.fusion.auto
    folds = stratified_folds(fs.index["label_idx"].to_numpy()[rows], fs.index["id"].to_numpy()[rows],
                             auto.folds, cfg.seed)
    held_out = [0] if len(rows) > auto.holdout_above else list(range(auto.folds))
    return rows, folds, held_out


def fold_view(fs: FeatureSet, rows: np.ndarray, folds: np.ndarray, held_out: int) -> FeatureSet:
    """The feature set with fold ``held_out`` as ``val`` and the other train+val rows as ``train``."""
    split = fs.index["split"].to_numpy().copy()
    split[rows] = np.where(folds == held_out, "val", "train")
    return dataclasses.replace(fs, index=fs.index.assign(split=split))


def cross_validate(fs: FeatureSet, name: str, fusion: FusionConfig, train: TrainConfig, seed: int,
                   plan: tuple[np.ndarray, np.ndarray, list[int]],
                   checkpoint_dir: Path | None = None, trials: int = 0) -> Candidate:
    """Train ``name`` once per held-out fold; collect fold scores and out-of-fold probabilities.

    Fused candidates train with ``fusion.auto.modality_dropout`` on every modality that
    ``train.modality_dropout`` leaves unset: without it a placeholder is never trained, and
    a multiplicative method can answer nonsense for a row that lacks a modality. With
    ``checkpoint_dir`` every fold fit keeps its per-epoch state there, so a killed run
    resumes (finished folds come back from their last checkpoint at once). With ``trials``
    a seeded Optuna search on the first fold's split picks the candidate's settings first.
    """
    rows, folds, held_out = plan
    unimodal = name.startswith(UNIMODAL)
    modalities = [name[len(UNIMODAL):]] if unimodal else fs.modalities
    method = UNIMODAL_METHOD if unimodal else name
    if not unimodal and fusion.auto.modality_dropout > 0:
        rates = {m: train.modality_dropout.get(m, fusion.auto.modality_dropout) for m in modalities}
        train = train.model_copy(update={"modality_dropout": rates})
    fusion = fusion.model_copy(update={"method": method})
    searched = {}
    if trials:
        best = search(fold_view(fs, rows, folds, held_out[0]), fusion, train, seed, trials,
                      fusion.search.epochs, modalities=modalities)
        fusion, train, searched = best.fusion, best.train, best.params
    oof = np.full((len(rows), len(fs.labels)), np.nan)
    candidate = Candidate(name, modalities, [], oof, searched=searched, settings=(fusion, train))
    for f in held_out:
        view = fold_view(fs, rows, folds, f)
        head, result = fit(view, fusion, train, seed + f, modalities=modalities,
                           checkpoint_dir=checkpoint_dir)
        scores = predict_split(head, view.split_inputs("val", modalities, head.spec.token_inputs))
        oof[folds == f] = scores.probs
        candidate.fold_scores.append(scores.macro_f1)
        candidate.heads.append(head)
        candidate.best_epochs.append(result.best_epoch)
        if result.checkpoint is not None:
            candidate.checkpoints.append(result.checkpoint)
    return candidate


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
                 checkpoint_dir: Path | None = None) -> Selection:
    """Cross-validate every candidate (and their ensemble); rank them, best first."""
    plan = fold_plan(fs, cfg)
    rows, folds, held_out = plan
    names = candidate_names(cfg, fs.modalities)
    trials = cfg.fusion.auto.trials
    if trials is None:
        trials = search_budget(int((folds != held_out[0]).sum()))
    candidates = []
    for name in progress(names, desc=f"auto: {len(held_out)}-fold CV", unit="candidate"):
        candidates.append(cross_validate(fs, name, cfg.fusion, cfg.train, cfg.seed, plan,
                                         checkpoint_dir, trials))
        log.info("candidate %s: CV macro-F1 %.4f ± %.4f", name, candidates[-1].mean,
                 candidates[-1].std)
        if on_candidate:
            on_candidate(candidates[-1])
    if cfg.fusion.auto.ensemble and len(candidates) > 1 and len(held_out) > 1:
        y = fs.index["label_idx"].to_numpy()[rows]
        ranked = sorted(candidates, key=lambda c: -c.mean)
        candidates.append(ensemble_candidate(ranked, y, folds, held_out,
                                             cfg.fusion.auto.ensemble_rounds))
        if on_candidate:
            on_candidate(candidates[-1])
    return Selection(ranked=rank(candidates), folds=len(held_out), holdout=len(held_out) == 1,
                     rows=len(rows), labels=fs.index["label_idx"].to_numpy()[rows],
                     seen=np.isin(folds, held_out))


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


def refit(candidate: Candidate, by_name: dict[str, Candidate], fs: FeatureSet,
          seed: int) -> FusionHead | FusionEnsemble:
    """What ships for ``candidate`` refitted: one model per (member) candidate on all train+val.

    Each is trained with its candidate's settings for the median of its folds' best epochs
    (:func:`crossfuse.training.loop.fit_epochs`); there is no row left to early-stop on.
    """
    split = fs.index["split"].to_numpy().copy()
    split[np.isin(split, ["train", "val"])] = "train"
    everything = dataclasses.replace(fs, index=fs.index.assign(split=split))

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
        return refit(candidate, by_name, fs, cfg.seed)
    return bagged(candidate, by_name)


def out_of_fold_scores(selection: Selection) -> SplitScores:
    """The winner's out-of-fold predictions on the rows that were held out, with their labels."""
    probs = selection.winner.oof[selection.seen]
    return SplitScores(labels=selection.labels[selection.seen],
                       probs=probs / probs.sum(-1, keepdims=True))
