"""Stage 4, train: search (optional) -> fit -> calibrate -> save the model folder.

The model folder holds the head's weights and spec (:mod:`crossfuse.fusion.model`), the
class names, the encoders, the validation-fitted temperature and the effective run
config (``run_config.json``: the config after any search), which the served model and
the unimodal baselines read back.

Example
-------
>>> result = train(cfg, Path("features"), Path("model"))     # doctest: +SKIP
>>> result.best_val_macro_f1, result.temperature             # doctest: +SKIP
(0.99, 1.31)
"""

from __future__ import annotations

from pathlib import Path

from crossfuse.atomic import write_text
from crossfuse.config import RunConfig
from crossfuse.features.store import FeatureSet, read_feature_set
from crossfuse.fusion import FusionHead, save_fusion_head
from crossfuse.fusion.model import RUN_CONFIG_FILE
from crossfuse.metrics import predict_split
from crossfuse.training.calibration import fit_temperature
from crossfuse.training.loop import EpochCallback, TrainResult, fit
from crossfuse.training.tuning import TrialCallback, search


def validation_temperature(head: FusionHead, fs: FeatureSet) -> float:
    """Temperature scaling ``T`` for the primary target, fitted on the validation split."""
    scores = predict_split(head, fs.split_inputs("val", list(head.spec.dims), head.spec.token_inputs))
    return fit_temperature(scores.labels, scores.probs)


def train(cfg: RunConfig, features: Path, model_dir: Path, on_epoch: EpochCallback | None = None,
          on_trial: TrialCallback | None = None) -> TrainResult:
    """Train the configured fused model on ``features`` and save it to ``model_dir``.

    With ``fusion.search.trials > 0`` a seeded Optuna search on the validation split
    picks the hyper-parameters first (:mod:`crossfuse.training.tuning`).
    """
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
