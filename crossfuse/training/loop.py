"""The training loop: fit a fusion head on a feature set, early-stopped on validation macro-F1.

Seeded (parameter init, batch order, modality dropout), so the same features + config +
seed give the same weights and metrics. The loop's whole state is a :class:`LoopState`,
which a checkpoint holds after every epoch (:mod:`crossfuse.training.checkpoint`), so a
killed run resumes where it stopped.

Example
-------
>>> fs = read_feature_set(Path("features"))                          # doctest: +SKIP
>>> head, result = fit(fs, FusionConfig(method="gmu"), TrainConfig(), seed=0)  # doctest: +SKIP
>>> result.best_val_macro_f1                                         # doctest: +SKIP
0.99
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.errors import UserError
from crossfuse.features.store import FeatureSet, SplitInputs
from crossfuse.fusion import FUSION_METHODS, FusionHead, FusionSpec, build_fusion_head
from crossfuse.metrics import predict_split
from crossfuse.training.checkpoint import checkpoint_key, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]

# A tie on macro-F1 is broken by a lower loss only when it is lower by this much: on data a
# head already gets right, the loss keeps creeping down and would hold off early stopping
# until the last epoch.
LOSS_MIN_DELTA = 1e-3


@dataclass
class TrainResult:
    method: str
    modalities: list[str]
    best_epoch: int
    epochs_run: int
    best_val_macro_f1: float
    history: list[dict[str, float]] = field(default_factory=list)
    searched: dict = field(default_factory=dict)  # hyper-parameters a search chose, if any
    temperature: float = 1.0  # temperature scaling fitted on the validation split
    checkpoint: Path | None = None  # the per-epoch state file, when fit kept one


@dataclass
class LoopState:
    """Early-stopping bookkeeping: the best epoch so far, its weights, the history.

    ``best`` is ``(val macro-F1, val loss)``: a higher F1 wins, a tie goes to a loss lower by
    more than ``LOSS_MIN_DELTA``.
    """

    best: tuple[float, float] = (-1.0, float("inf"))
    best_state: dict | None = None
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stale: int = 0
    stopped: bool = False

    def record(self, epoch: int, metrics: dict[str, float], head: nn.Module, patience: int) -> None:
        """Add one epoch; keep the head's weights when it is the best so far; stop when stale."""
        self.history.append({"epoch": epoch, **metrics})
        score = (metrics["val_macro_f1"], metrics["val_loss"])
        if score[0] > self.best[0] + 1e-9 or (abs(score[0] - self.best[0]) <= 1e-9
                                              and score[1] < self.best[1] - LOSS_MIN_DELTA):
            self.best, self.best_epoch, self.stale = score, epoch, 0
            self.best_state = copy.deepcopy(head.state_dict())
        else:
            self.stale += 1
            self.stopped = self.stale >= patience

    def to_checkpoint(self, key: str, head: nn.Module, optimiser: torch.optim.Optimizer,
                      generator: torch.Generator) -> dict:
        """Everything a resume needs: this state plus the head, optimiser and RNG states."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**state, "best": list(self.best), "key": key, "head": head.state_dict(),
                "optimiser": optimiser.state_dict(), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state()}

    @classmethod
    def from_checkpoint(cls, saved: dict, head: nn.Module, optimiser: torch.optim.Optimizer,
                        generator: torch.Generator) -> LoopState:
        """Restore the head, optimiser and RNGs from ``saved``; return the loop state."""
        head.load_state_dict(saved["head"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        state = cls(**{f.name: saved[f.name] for f in fields(cls)})
        state.best = tuple(state.best)
        return state


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def drop_modalities(present: dict[str, torch.Tensor], rates: dict[str, float],
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Modality dropout: hide each modality of each row with its rate; never all of a row's.

    >>> p = {"image": torch.ones(4, dtype=torch.bool), "text": torch.ones(4, dtype=torch.bool)}
    >>> out = drop_modalities(p, {"image": 0.99, "text": 0.99}, torch.Generator().manual_seed(0))
    >>> bool(torch.stack(list(out.values())).any(0).all())
    True
    """
    if not any(rates.get(m, 0.0) for m in present):
        return present
    kept = {m: p & (torch.rand(len(p), generator=generator) >= rates.get(m, 0.0))
            for m, p in present.items()}
    emptied = ~torch.stack(list(kept.values())).any(0) & torch.stack(list(present.values())).any(0)
    return {m: kept[m] | (emptied & present[m]) for m in present}


def build_spec(fs: FeatureSet, fusion: FusionConfig, modalities: list[str]) -> FusionSpec:
    """The fusion head's spec for ``fs``: dims, classes, extra targets, aux heads, tokens.

    A method that can read token sequences gets them when the feature set has them for
    every modality used.
    """
    method = FUSION_METHODS.get(fusion.method)
    token_inputs = bool(method is not None and method.uses_tokens
                        and all(m in fs.tokens for m in modalities))
    return FusionSpec(method=fusion.method, dims={m: fs.vectors[m].shape[1] for m in modalities},
                      num_classes=len(fs.labels), hidden_dim=fusion.hidden_dim,
                      dropout=fusion.dropout,
                      extra_targets={t: len(c) for t, c in fs.targets.items()},
                      aux_heads=fusion.aux_weight > 0 and len(modalities) > 1,
                      options=dict(fusion.options), token_inputs=token_inputs,
                      bottleneck=fusion.bottleneck, input_dropout=fusion.input_dropout)


def training_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                  present: dict[str, torch.Tensor], primary: str, fusion: FusionConfig,
                  train: TrainConfig) -> torch.Tensor:
    """Primary cross-entropy + weighted extra targets + weighted per-modality auxiliary heads.

    Every term uses ``train.label_smoothing``.

    An auxiliary head only learns from the rows where its modality is present.
    """
    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y, label_smoothing=train.label_smoothing)

    loss = ce(out[primary], targets[primary])
    for name, y in targets.items():
        if name != primary:
            loss = loss + train.extra_target_weight * ce(out[name], y)
    for m, p in present.items():
        aux = out.get(f"aux:{m}")
        if aux is not None and p.any():
            loss = loss + fusion.aux_weight * ce(aux[p], targets[primary][p])
    return loss


def train_epoch(head: FusionHead, data: SplitInputs, targets: dict[str, torch.Tensor],
                optimiser: torch.optim.Optimizer, generator: torch.Generator,
                fusion: FusionConfig, train: TrainConfig) -> float:
    """One shuffled pass over ``data`` with modality dropout; returns the mean training loss."""
    head.train()
    order = torch.randperm(len(data), generator=generator)
    total = 0.0
    for s in range(0, len(order), train.batch_size):
        idx = order[s:s + train.batch_size]
        batch = data.select(idx)
        present = drop_modalities(batch.present, train.modality_dropout, generator)
        out = head.forward_all(batch.vectors, present, batch.tokens)
        loss = training_loss(out, {t: y[idx] for t, y in targets.items()}, present,
                             head.spec.target, fusion, train)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total += loss.item() * len(idx)
    return total / len(data)


def validation_metrics(head: FusionHead, data: SplitInputs) -> dict[str, float]:
    """val_loss, val_macro_f1 and val_accuracy of ``head`` on the validation inputs."""
    scores = predict_split(head, data)
    return {"val_loss": scores.nll, "val_macro_f1": scores.macro_f1, "val_accuracy": scores.accuracy}


def start_training(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, seed: int,
                   modalities: list[str]):
    """A freshly seeded head, its training inputs and targets, optimiser and batch-order RNG:
    ``(head, SplitInputs, {target: labels}, AdamW, Generator)`` for :func:`train_epoch`.

    AdamW runs its fused kernel (one op per step over all parameters instead of a dozen per
    tensor: about 2x faster fits of small heads on a CPU, same updates).
    """
    seed_everything(seed)
    spec = build_spec(fs, fusion, modalities)
    head = build_fusion_head(spec)
    data_tr = fs.split_inputs("train", modalities, spec.token_inputs)
    train_rows = fs.rows("train")
    targets = {spec.target: data_tr.labels,
               **{t: fs.labels_of(t)[train_rows] for t in spec.extra_targets}}
    optimiser = torch.optim.AdamW(head.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                                  fused=True)
    return head, data_tr, targets, optimiser, torch.Generator().manual_seed(seed)


def fit_epochs(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, seed: int, epochs: int,
               modalities: list[str] | None = None) -> FusionHead:
    """Train on the train split for exactly ``epochs`` epochs, with no validation split.

    For a refit on all labelled rows, where the epoch count comes from early stopping
    elsewhere (cross-validation). Same seeding as :func:`fit`: with the same train split,
    ``fit_epochs(..., epochs=n)`` gives the weights ``fit`` had after epoch ``n``.
    """
    if fusion.method not in FUSION_METHODS:
        raise ValueError(f"fit_epochs trains one fusion method, got {fusion.method!r}")
    modalities = modalities or fs.modalities
    head, data_tr, targets, optimiser, generator = start_training(fs, fusion, train, seed, modalities)
    if len(data_tr) == 0:
        raise UserError("need train samples to fit; add samples or change preprocess.split")
    for _ in range(max(1, epochs)):
        train_epoch(head, data_tr, targets, optimiser, generator, fusion, train)
    head.eval()
    return head


def fit(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, seed: int,
        modalities: list[str] | None = None, on_epoch: EpochCallback | None = None,
        checkpoint_dir: Path | None = None) -> tuple[FusionHead, TrainResult]:
    """Train ``fusion.method`` on the train split; keep the epoch with the best val macro-F1.

    Parameters
    ----------
    fs: feature set (train and val splits used); its extra targets are learned too.
    fusion, train: the config sections.
    seed: seeds init, shuffling and modality dropout.
    modalities: subset to use (unimodal baselines); default all in ``fs``.
    on_epoch: called as ``on_epoch(epoch, metrics)`` with train_loss, val_loss,
        val_macro_f1, val_accuracy (on a resume, first for the epochs already done).
    checkpoint_dir: save the loop's state there after every epoch and resume from it
        (:mod:`crossfuse.training.checkpoint`); None trains without checkpoints.

    Returns
    -------
    (the best head in eval mode, TrainResult)
    """
    if fusion.method not in FUSION_METHODS:
        raise ValueError(f"fit trains one fusion method, got fusion.method={fusion.method!r}; "
                         f"choose one of {sorted(FUSION_METHODS)} (fusion.method=auto is a choice "
                         f"among several: crossfuse.training.train.train makes it)")
    modalities = modalities or fs.modalities
    head, data_tr, targets, optimiser, generator = start_training(fs, fusion, train, seed, modalities)
    data_va = fs.split_inputs("val", modalities, head.spec.token_inputs)
    if len(data_tr) == 0 or len(data_va) == 0:
        raise UserError(f"need train and val samples, got {len(data_tr)} train / {len(data_va)} "
                        f"val; add samples or change preprocess.split")
    # The key hashes the whole index: only for checkpointed training, not every trial/baseline.
    key = checkpoint_key(fs, fusion, train, seed, modalities) if checkpoint_dir else ""
    ckpt = Path(checkpoint_dir) / f"{key}.pt" if checkpoint_dir else None
    saved = load_checkpoint(ckpt, key) if ckpt else None
    state = LoopState.from_checkpoint(saved, head, optimiser, generator) if saved else LoopState()
    if saved:
        log.info("resuming %s from the checkpoint of epoch %d (%s)", fusion.method,
                 len(state.history), ckpt)
        for row in state.history if on_epoch else []:
            on_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
    for epoch in range(len(state.history) + 1, train.epochs + 1):
        if state.stopped:
            break
        train_loss = train_epoch(head, data_tr, targets, optimiser, generator, fusion, train)
        metrics = {"train_loss": train_loss, **validation_metrics(head, data_va)}
        state.record(epoch, metrics, head, train.patience)
        if on_epoch:
            on_epoch(epoch, metrics)
        if ckpt:
            save_checkpoint(ckpt, state.to_checkpoint(key, head, optimiser, generator))
    head.load_state_dict(state.best_state)
    head.eval()
    log.info("trained %s on %s: best val macro-F1 %.4f at epoch %d/%d", fusion.method,
             "+".join(modalities), state.best[0], state.best_epoch, len(state.history))
    return head, TrainResult(method=fusion.method, modalities=modalities,
                             best_epoch=state.best_epoch, epochs_run=len(state.history),
                             best_val_macro_f1=state.best[0], history=state.history,
                             checkpoint=ckpt)
