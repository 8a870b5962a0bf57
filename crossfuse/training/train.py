"""Stage 4, train: search (optional) -> fit -> calibrate -> save the model folder.

The model folder holds the head's weights and spec (:mod:`crossfuse.fusion.model`), the
class names, the encoders, the temperature (fitted on rows the shipped model never
trained on: the validation split it early-stopped on, or with ``auto`` the calibration
slice), the number of rows it was fitted on, and the effective run
config (``run_config.json``: the config after any search), which the served model and
the unimodal baselines read back.

With ``fusion.method: auto`` (:mod:`crossfuse.training.selection`) the folder also holds
``selection.json`` (every candidate's cross-validated macro-F1, ranked, and the verdict)
and ``baselines/<modality>/`` (the unimodal candidates, made the way the shipped model
is, which the evaluate stage scores on the test split beside it).

Example
-------
>>> result = train(cfg, Path("features"), Path("model"))     # doctest: +SKIP
>>> result.best_val_macro_f1, result.temperature             # doctest: +SKIP
(0.99, 1.31)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from crossfuse import storage
from crossfuse.atomic import write_json, write_text
from crossfuse.config import RunConfig
from crossfuse.encoders.adapt import FinetuneSpec
from crossfuse.errors import UserError
from crossfuse.features.reference import write_reference
from crossfuse.features.store import FeatureCache, FeatureSet, read_feature_set
from crossfuse.fusion import FusionHead, save_fusion_head
from crossfuse.fusion.model import HISTORY_FILE, RUN_CONFIG_FILE
from crossfuse.metrics import predict_split
from crossfuse.training.calibration import fit_temperature
from crossfuse.training.candidate_checkpoints import CandidateCheckpoints
from crossfuse.training.loop import EpochCallback, TrainResult, fit
from crossfuse.training.selection import (
    AUTO,
    UNIMODAL,
    Candidate,
    Selection,
    calibration_scores,
    select_model,
    shipped,
)
from crossfuse.training.tuning import TrialCallback, search

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"
BASELINES_DIR = "baselines"


def validation_temperature(head: FusionHead, fs: FeatureSet) -> float:
    """Temperature scaling ``T`` for the primary target, fitted on the validation split (which
    the head early-stopped on but never trained on)."""
    scores = predict_split(head, fs.split_inputs("val", list(head.spec.dims), head.spec.token_inputs))
    return fit_temperature(scores.labels, scores.probs)


def train(cfg: RunConfig, features: Path, model_dir: Path, on_epoch: EpochCallback | None = None,
          on_trial: TrialCallback | None = None,
          on_candidate: Callable[[Candidate], None] | None = None,
          on_progress: Callable[[str], None] | None = None,
          preprocessed: Path | None = None) -> TrainResult:
    """Train the configured fused model on ``features`` and save it to ``model_dir``.

    With ``fusion.search.trials > 0`` a seeded Optuna search on the validation split
    picks the hyper-parameters first (:mod:`crossfuse.training.tuning`). With
    ``fusion.method: auto`` the model is chosen by cross-fitting (:func:`train_auto`);
    ``on_candidate`` then sees each candidate's result and ``on_progress`` gets progress lines.
    With ``fusion.finetune`` the encoders' tops train with the head (:func:`train_finetuned`),
    reading the items from ``preprocessed``.
    """
    fs = read_feature_set(Path(features))
    if FinetuneSpec.parse(cfg.fusion.finetune).active:
        return train_finetuned(cfg, fs, Path(model_dir), preprocessed, on_epoch)
    write_reference(fs, Path(model_dir))  # what it learned from, for drift checks on new data
    if cfg.fusion.method == AUTO:
        return train_auto(cfg, fs, Path(model_dir), on_candidate, on_progress, preprocessed)
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
    save_fusion_head(head, Path(model_dir),
                     extra=model_extras(fs, result.temperature, best_epoch=result.best_epoch,
                                        calibration_rows=len(fs.rows("val"))))
    write_text(Path(model_dir) / RUN_CONFIG_FILE, effective.to_json())
    write_json(Path(model_dir) / HISTORY_FILE, {"best_epoch": result.best_epoch,
                                                "history": result.history})
    result.checkpoint.unlink(missing_ok=True)  # the model is saved: the checkpoint is done
    storage.remove(result.checkpoint)
    return result


def train_finetuned(cfg: RunConfig, fs: FeatureSet, model_dir: Path, preprocessed: Path | None,
                    on_epoch: EpochCallback | None = None) -> TrainResult:
    """Fine-tune (:mod:`crossfuse.training.finetune`) and save the head with the adapted
    encoders (:func:`save_adapted_encoders`); its temperature is fitted on the val split."""
    from crossfuse.training.finetune import finetune

    if cfg.fusion.search.trials > 0:
        raise UserError("fusion.finetune does not run with fusion.search.trials > 0; set "
                        "fusion.search.trials=0")
    tuned = finetune(cfg, fs, preprocessed, on_epoch=on_epoch)
    features = save_adapted_encoders(cfg, tuned, model_dir)
    result = tuned.result
    result.temperature = validation_temperature(tuned.head, features)
    save_fusion_head(tuned.head, model_dir,
                     extra=model_extras(features, result.temperature, best_epoch=result.best_epoch,
                                        calibration_rows=len(fs.rows("val")),
                                        finetune=cfg.fusion.finetune))
    write_text(model_dir / RUN_CONFIG_FILE, cfg.to_json())
    write_json(model_dir / HISTORY_FILE, {"best_epoch": result.best_epoch, "history": result.history})
    if result.checkpoint is not None:
        result.checkpoint.unlink(missing_ok=True)
        storage.remove(result.checkpoint)
    return result


def save_adapted_encoders(cfg: RunConfig, tuned, model_dir: Path) -> FeatureSet:
    """Write a fine-tuning's adapted encoders into ``model_dir``; returns its feature set with
    their ``encoders`` entries, after writing the drift reference from it.

    Each adapted encoder is written whole into ``encoders/<modality>/`` and recorded in the
    spec's ``encoders`` entry (``adapted``: how, blocks, folder) under its own cache key; the
    trained tops' vectors of every row go into the feature cache under that key, so the
    drift reference and evaluation read the vectors of the encoder that ships.
    """
    from crossfuse.encoders.adapt import load_adapted_encoder
    from crossfuse.training.finetune import adapted_folder

    fs = tuned.features
    encoders = dict(fs.encoders)
    for m, split in tuned.splits.items():
        record = {**split.save(model_dir / adapted_folder(m)), "folder": adapted_folder(m)}
        entry = {**fs.encoders[m], "adapted": record, "backend": "torch", "device": "cpu"}
        entry["cache_key"] = load_adapted_encoder(entry, model_dir, m).cache_key
        rows = fs.present(m).numpy().nonzero()[0]
        unique, first = np.unique(fs.index[f"hash_{m}"].to_numpy()[rows], return_index=True)
        if len(unique):
            FeatureCache(Path(cfg.extract.cache_dir), entry["cache_key"]).put(
                unique.tolist(), {"vectors": fs.vectors[m][rows[first]].contiguous()})
        encoders[m] = entry
    features = dataclasses.replace(fs, encoders=encoders)
    write_reference(features, model_dir)
    return features


def model_extras(fs: FeatureSet, temperature: float, **more) -> dict:
    """What a saved model keeps beside its spec: classes, encoders, targets, temperature."""
    return {"labels": fs.labels, "encoders": fs.encoders, "targets": fs.targets,
            "temperature": temperature, **more}


def train_auto(cfg: RunConfig, fs: FeatureSet, model_dir: Path,
               on_candidate: Callable[[Candidate], None] | None = None,
               on_progress: Callable[[str], None] | None = None,
               preprocessed: Path | None = None) -> TrainResult:
    """Choose the model by cross-fitting and save what ships (``fusion.auto.ship``).

    The shipped model's temperature is fitted on its own predictions for the calibration
    slice, rows that none of its members (fold models, ensemble members, or the refit)
    trained on. The unimodal candidates are saved too (``baselines/<m>/``): the evaluate
    stage scores them on the test split beside the shipped model.

    A fine-tuned winner (``fusion.auto.finetune``) ships refitted whatever
    ``fusion.auto.ship`` says (its fold models each have their own encoders), with its
    adapted encoders (:func:`save_adapted_encoders`).
    """
    checkpoints = CandidateCheckpoints(cfg, fs)
    selection: Selection = select_model(fs, cfg, on_candidate, on_progress, checkpoints,
                                        preprocessed)
    if selection.resumed:
        log.warning("auto resumed %d finished candidates from %s", selection.resumed,
                    checkpoints.dir)
    winner = selection.winner
    ship = cfg.fusion.auto.ship
    if winner.kind == "finetuned":
        from crossfuse.training.finetune import refit_finetuned

        fusion, train = winner.settings
        tuned = refit_finetuned(fs, selection.plan,
                                cfg.model_copy(update={"fusion": fusion, "train": train}),
                                winner.epochs, preprocessed)
        model, shipped_fs, ship = tuned.head, save_adapted_encoders(cfg, tuned, model_dir), "refit"
    else:
        model, shipped_fs = shipped(selection, fs, cfg), fs
    held_out = calibration_scores(model, shipped_fs, selection.plan)  # on rows it never saw
    temperature = fit_temperature(held_out.labels, held_out.probs)
    extra = {"chosen": winner.name, "shipped": ship, "calibration_rows": len(held_out.labels)}
    save_fusion_head(model, model_dir, extra=model_extras(shipped_fs, temperature, **extra))
    for c in selection.ranked:  # baselines are made the way the shipped model is: a fair pair
        if c.kind == "unimodal":
            save_fusion_head(shipped(selection, fs, cfg, c),
                             model_dir / BASELINES_DIR / c.name[len(UNIMODAL):],
                             extra=model_extras(fs, 1.0, chosen=c.name, shipped=cfg.fusion.auto.ship))
    write_json(model_dir / SELECTION_FILE, {**selection.to_json(), "shipped": ship,
                                            "temperature": temperature,
                                            "calibration_rows": len(held_out.labels)})
    method = winner.name if winner.kind == "fused" else cfg.fusion.method
    effective = cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update={"method": method})})
    write_text(model_dir / RUN_CONFIG_FILE, effective.to_json())
    checkpoints.clear()  # the model is saved
    return TrainResult(method=winner.name, modalities=winner.modalities,
                       best_epoch=winner.epochs, epochs_run=winner.epochs,
                       best_val_macro_f1=winner.mean, temperature=temperature,
                       searched={})
