"""Linear probes: the ``linear`` head fitted exactly, by full-batch L-BFGS, in a fraction of a second.

A ``linear`` head (:mod:`crossfuse.fusion.linear`) LayerNorms each modality's vector and
applies one linear layer per target. With the LayerNorms frozen at identity affine and
missing modalities at their zero placeholders (LayerNorm of zeros is zeros: a missing
modality adds nothing), the normalised inputs are fixed, so fitting the head is
multinomial logistic regression: mean cross-entropy + ``penalty / 2 * ||W||^2``, a convex
problem L-BFGS solves in a few dozen full-batch steps instead of epochs of mini-batches.

Modality dropout is exact here too: for each modality with a rate ``r``, a copy of every
row that has it and another modality joins the fit with the modality zeroed, weighted
``r``; the probe learns to answer from what is left.

``penalty`` is the one setting; :func:`tune_penalty` picks it from :data:`PENALTIES` on a
validation split, fitting the grid from the strongest penalty down, each fit starting
from the previous one's weights (a regularisation path).

Example
-------
>>> fs = read_feature_set(Path("features"))                                   # doctest: +SKIP
>>> tuned = tune_penalty(fs, FusionConfig(method="linear"), TrainConfig(), ["text"])  # doctest: +SKIP
>>> tuned.penalty, tuned.value                                                # doctest: +SKIP
(0.1, (0.867, -0.481))
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.errors import UserError
from crossfuse.features.store import FeatureSet, SplitInputs
from crossfuse.fusion import FusionHead, build_fusion_head
from crossfuse.metrics import SplitScores, predict_split
from crossfuse.training.loop import build_spec

PROBE = "linear"
# L2 penalties per row, strongest first: 1 (a near-constant model) down to 1e-4 (almost none).
# Decades: half-decades and 100 L-BFGS steps took twice as long here and chose no better.
PENALTIES = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)
MAX_STEPS = 50
# The path stops once this many weaker penalties in a row have not beaten the best: past the
# optimum, weaker penalties only overfit more, and they are the slow fits.
PATIENCE = 2


def probe_spec_config(fusion: FusionConfig) -> FusionConfig:
    """The fusion settings of a probe: ``linear``, no dropout, bottleneck or auxiliary heads."""
    return fusion.model_copy(update={"method": PROBE, "dropout": 0.0, "input_dropout": 0.0,
                                     "bottleneck": 0, "aux_weight": 0.0})


def normalised_inputs(head: FusionHead, data: SplitInputs) -> torch.Tensor:
    """``[N, sum D_m]``: what the head's linear layer reads (LayerNormed, a missing modality 0)."""
    with torch.no_grad():
        filled = head.fill_missing(data.vectors, data.present)
        return torch.cat([head.fusion.norms[m](filled[m]) for m in head.modalities], dim=-1)


def _with_dropped_modalities(x: torch.Tensor, present: dict[str, torch.Tensor],
                             dims: dict[str, int], rates: dict[str, float]
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x', rows, weights)``: ``x`` plus, per modality with a rate, the rows that have it and
    another modality, with it zeroed; ``rows`` maps each row of ``x'`` to its source row."""
    n = len(x)
    xs, rows, weights = [x], [torch.arange(n)], [torch.ones(n)]
    count = torch.stack(list(present.values())).sum(0)
    start = 0
    for m, d in dims.items():
        rate = rates.get(m, 0.0)
        keep = present[m] & (count > 1)
        if rate > 0 and keep.any():
            idx = keep.nonzero().flatten()
            copy = x[idx].clone()
            copy[:, start:start + d] = 0.0
            xs.append(copy)
            rows.append(idx)
            weights.append(torch.full((len(idx),), rate))
        start += d
    return torch.cat(xs), torch.cat(rows), torch.cat(weights)


def _fit_layer(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, layer: nn.Linear,
               penalty: float, label_smoothing: float) -> None:
    """Fit ``layer`` in place: weighted mean cross-entropy + ``penalty / 2 * ||W||^2``."""
    optimiser = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=MAX_STEPS, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10,
                                  line_search_fn="strong_wolfe")
    total = weights.sum()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        ce = nn.functional.cross_entropy(layer(x), y, reduction="none",
                                         label_smoothing=label_smoothing)
        loss = (weights * ce).sum() / total + 0.5 * penalty * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)


@dataclass(frozen=True)
class _Problem:
    """One probe fit's fixed inputs, built once for every penalty tried on them."""

    head: FusionHead  # a fresh probe; each fit works on a copy
    x: torch.Tensor  # [N', sum D_m] normalised inputs, modality-dropout copies appended
    rows: torch.Tensor  # [N'] the train row each came from
    weights: torch.Tensor  # [N']
    labels: dict[str, torch.Tensor]  # target -> [N] class ids of the train rows


def _problem(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, modalities: list[str]
             ) -> _Problem:
    spec = build_spec(fs, probe_spec_config(fusion), modalities)
    # Nothing in a probe depends on its random init: placeholders and LayerNorms start at
    # fixed values and the linear layers are overwritten by the fit.
    head = build_fusion_head(spec).eval()
    data = fs.split_inputs("train", modalities)
    if len(data) == 0:
        raise UserError("need train samples to fit; add samples or change preprocess.split")
    x, rows, weights = _with_dropped_modalities(normalised_inputs(head, data), data.present,
                                                spec.dims, train.modality_dropout)
    train_rows = fs.rows("train")
    labels = {spec.target: data.labels, **{t: fs.labels_of(t)[train_rows] for t in spec.extra_targets}}
    return _Problem(head, x, rows, weights, labels)


def _solve(problem: _Problem, penalty: float, label_smoothing: float,
           start: FusionHead | None = None) -> FusionHead:
    head = copy.deepcopy(problem.head)
    for target, layer in head.fusion.decisions.items():
        with torch.no_grad():
            if start is not None:
                layer.load_state_dict(start.fusion.decisions[target].state_dict())
            else:
                layer.weight.zero_()
                layer.bias.zero_()
        _fit_layer(problem.x, problem.labels[target][problem.rows], problem.weights, layer,
                   penalty, label_smoothing)
    return head


def fit_probe(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, modalities: list[str],
              penalty: float, start: FusionHead | None = None) -> FusionHead:
    """A ``linear`` head fitted on ``fs``'s train split (every target), in eval mode.

    ``train.modality_dropout`` and ``train.label_smoothing`` apply; ``start`` (a probe of
    the same spec) gives the starting weights, else zeros. Deterministic: no seed is drawn.
    """
    return _solve(_problem(fs, fusion, train, modalities), penalty, train.label_smoothing, start)


@dataclass(frozen=True)
class TunedProbe:
    """The penalty :func:`tune_penalty` chose, its val score and the probe it fitted."""

    penalty: float
    value: tuple[float, float]  # (val macro-F1, -val NLL)
    fits: int
    head: FusionHead


def tune_penalty(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, modalities: list[str]
                 ) -> TunedProbe:
    """The best of :data:`PENALTIES` on ``fs``'s val split, each probe fitted on its train split.

    A tie on macro-F1 goes to the lower loss. The path stops after :data:`PATIENCE`
    penalties without a better score.
    """
    problem = _problem(fs, fusion, train, modalities)
    val = fs.split_inputs("val", modalities)
    best, head, stale, fits = None, None, 0, 0
    for penalty in PENALTIES:
        head = _solve(problem, penalty, train.label_smoothing, start=head)
        fits += 1
        scores: SplitScores = predict_split(head, val)
        value = (scores.macro_f1, -scores.nll)
        if best is None or value > best.value:
            best, stale = TunedProbe(penalty, value, 0, head), 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    return dataclasses.replace(best, fits=fits)
