"""Stage 4, train: fit a fusion head on a feature set, early-stopped on validation macro-F1.

Seeded (parameter init and batch order), so the same features + config + seed give
the same weights and metrics. ``on_epoch`` receives each epoch's metrics, which
the pipeline logs to MLflow as curves.

Example
-------
>>> fs = read_feature_set(Path("features"))                          # doctest: +SKIP
>>> head, result = fit(fs, FusionConfig(), TrainConfig(), seed=0)    # doctest: +SKIP
>>> result.best_val_macro_f1                                         # doctest: +SKIP
0.99
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from crossfuse.atomic import write_text
from crossfuse.training.checkpoint import checkpoint_key, load_checkpoint, save_checkpoint
from crossfuse.config import FusionConfig, RunConfig, TrainConfig
from crossfuse.features.store import FeatureSet, read_feature_set
from crossfuse.fusion import (
    FUSION_METHODS,
    FusionHead,
    FusionSpec,
    build_fusion_head,
    predict_proba,
    save_fusion_head,
)
from crossfuse.fusion.model import RUN_CONFIG_FILE

log = logging.getLogger(__name__)


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


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-averaged F1 over all ``num_classes`` classes (absent classes score 0)."""
    return float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro",
                          zero_division=0))


def split_tensors(fs: FeatureSet, split: str, modalities: list[str], target: str | None = None):
    """(features, present, class ids) of one split, restricted to ``modalities``.

    ``target`` None means the primary label; otherwise an extra target's name.
    """
    rows = fs.rows(split)
    feats = {m: fs.vectors[m][rows] for m in modalities}
    present = {m: fs.present(m)[rows] for m in modalities}
    return feats, present, fs.labels_of(target)[rows]


def split_tokens(fs: FeatureSet, split: str, modalities: list[str], spec: FusionSpec):
    """Token sequences of one split when the head reads them, else None."""
    if not spec.token_inputs:
        return None
    rows = fs.rows(split)
    return {m: (fs.tokens[m][0][rows], fs.tokens[m][1][rows]) for m in modalities}


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
                      options=dict(fusion.options), token_inputs=token_inputs)


def training_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                  present: dict[str, torch.Tensor], primary: str, fusion: FusionConfig,
                  train: TrainConfig) -> torch.Tensor:
    """Primary cross-entropy + weighted extra targets + weighted per-modality auxiliary heads.

    An auxiliary head only learns from the rows where its modality is present.
    """
    ce = nn.functional.cross_entropy
    loss = ce(out[primary], targets[primary])
    for name, y in targets.items():
        if name != primary:
            loss = loss + train.extra_target_weight * ce(out[name], y)
    for m, p in present.items():
        aux = out.get(f"aux:{m}")
        if aux is not None and p.any():
            loss = loss + fusion.aux_weight * ce(aux[p], targets[primary][p])
    return loss


def fit(fs: FeatureSet, fusion: FusionConfig, train: TrainConfig, seed: int,
        modalities: list[str] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        checkpoint_dir: Path | None = None,
        ) -> tuple[FusionHead, TrainResult]:
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
    modalities = modalities or fs.modalities
    seed_everything(seed)
    spec = build_spec(fs, fusion, modalities)
    head = build_fusion_head(spec)
    x_tr, p_tr, y_tr = split_tensors(fs, "train", modalities)
    x_va, p_va, y_va = split_tensors(fs, "val", modalities)
    t_tr, t_va = (split_tokens(fs, s, modalities, spec) for s in ("train", "val"))
    if len(y_tr) == 0 or len(y_va) == 0:
        raise ValueError(f"need train and val samples, got {len(y_tr)} train / {len(y_va)} val; "
                         f"add samples or change preprocess.split")
    targets_tr = {spec.target: y_tr, **{t: split_tensors(fs, "train", modalities, t)[2]
                                        for t in spec.extra_targets}}
    optimiser = torch.optim.AdamW(head.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best = (-1.0, float("inf"))
    best_state, best_epoch, history, stale, stopped = None, 0, [], 0, False
    # The key hashes the whole index: only for checkpointed training, not every trial/baseline.
    key = checkpoint_key(fs, fusion, train, seed, modalities) if checkpoint_dir else ""
    ckpt = Path(checkpoint_dir) / f"{key}.pt" if checkpoint_dir else None
    state = load_checkpoint(ckpt, key) if ckpt else None
    if state:
        head.load_state_dict(state["head"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        best, best_state = tuple(state["best"]), state["best_state"]
        best_epoch, history, stale = state["best_epoch"], state["history"], state["stale"]
        stopped = state["stopped"]
        log.info("resuming %s from the checkpoint of epoch %d (%s)", fusion.method,
                 len(history), ckpt)
        for row in history if on_epoch else []:
            on_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
    for epoch in range(len(history) + 1, train.epochs + 1):
        if stopped:
            break
        head.train()
        order = torch.randperm(len(y_tr), generator=generator)
        total = 0.0
        for s in range(0, len(order), train.batch_size):
            idx = order[s:s + train.batch_size]
            present = drop_modalities({m: p_tr[m][idx] for m in modalities},
                                      train.modality_dropout, generator)
            tok = {m: (t[idx], k[idx]) for m, (t, k) in t_tr.items()} if t_tr else None
            out = head.forward_all({m: x_tr[m][idx] for m in modalities}, present, tok)
            loss = training_loss(out, {t: y[idx] for t, y in targets_tr.items()}, present,
                                 spec.target, fusion, train)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        probs = predict_proba(head, x_va, p_va, t_va)
        val_loss = float(nn.functional.nll_loss(probs.clamp_min(1e-12).log(), y_va))
        pred = probs.argmax(-1).numpy()
        metrics = {"train_loss": total / len(y_tr), "val_loss": val_loss,
                   "val_macro_f1": macro_f1(y_va.numpy(), pred, len(fs.labels)),
                   "val_accuracy": float((pred == y_va.numpy()).mean())}
        history.append({"epoch": epoch, **metrics})
        if on_epoch:
            on_epoch(epoch, metrics)
        score = (metrics["val_macro_f1"], val_loss)
        if score[0] > best[0] + 1e-9 or (abs(score[0] - best[0]) <= 1e-9 and score[1] < best[1]):
            best, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            stale += 1
            stopped = stale >= train.patience
        if ckpt:
            save_checkpoint(ckpt, {"key": key, "head": head.state_dict(),
                                   "optimiser": optimiser.state_dict(),
                                   "generator": generator.get_state(),
                                   "torch_rng": torch.get_rng_state(), "best": list(best),
                                   "best_state": best_state, "best_epoch": best_epoch,
                                   "history": history, "stale": stale, "stopped": stopped})
    head.load_state_dict(best_state)
    head.eval()
    result = TrainResult(method=fusion.method, modalities=modalities, best_epoch=best_epoch,
                         epochs_run=len(history), best_val_macro_f1=best[0], history=history,
                         checkpoint=ckpt)
    log.info("trained %s on %s: best val macro-F1 %.4f at epoch %d/%d", fusion.method,
             "+".join(modalities), best[0], best_epoch, len(history))
    return head, result


def validation_temperature(head: FusionHead, fs: FeatureSet) -> float:
    """Temperature scaling ``T`` for the primary target, fitted on the validation split."""
    from crossfuse.training.calibration import fit_temperature

    modalities = list(head.spec.dims)
    x, present, y = split_tensors(fs, "val", modalities)
    probs = predict_proba(head, x, present, split_tokens(fs, "val", modalities, head.spec))
    return fit_temperature(y.numpy(), probs.numpy())


def train(cfg: RunConfig, features: Path, model_dir: Path,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          on_trial: Callable[[int, dict, float], None] | None = None) -> TrainResult:
    """Train the configured fused model on ``features`` and save it to ``model_dir``.

    With ``fusion.search.trials > 0`` a seeded Optuna search on the validation split
    picks the hyper-parameters first (:mod:`crossfuse.training.tuning`). The model folder holds
    the head, its spec and the effective run config (``run_config.json``).
    """
    from crossfuse.training.tuning import search

    fs = read_feature_set(Path(features))
    fusion, train_cfg, searched = cfg.fusion, cfg.train, {}
    if cfg.fusion.search.trials > 0:
        best = search(fs, fusion, train_cfg, cfg.seed, cfg.fusion.search.trials,
                      cfg.fusion.search.epochs, on_trial=on_trial)
        fusion, train_cfg, searched = best.fusion, best.train, best.params
    head, result = fit(fs, fusion, train_cfg, cfg.seed, on_epoch=on_epoch,
                       checkpoint_dir=Path(cfg.train.checkpoint_dir))
    result.searched = searched
    result.temperature = validation_temperature(head, fs)
    effective = cfg.model_copy(update={"fusion": fusion, "train": train_cfg})
    save_fusion_head(head, Path(model_dir), extra={"labels": fs.labels, "encoders": fs.encoders,
                                                   "targets": fs.targets,
                                                   "best_epoch": result.best_epoch,
                                                   "temperature": result.temperature})
    write_text(Path(model_dir) / RUN_CONFIG_FILE, effective.to_json())
    result.checkpoint.unlink(missing_ok=True)  # the model is saved: the checkpoint is done
    return result
