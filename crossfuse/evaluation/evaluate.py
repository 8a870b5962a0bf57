"""Stage 5, evaluate: test metrics of the fused model, and unimodal baselines beside it.

Writes to ``out_dir``: ``metrics.json`` (flat name -> value, ready for MLflow),
``classification_report.json`` (per-class precision/recall/F1/support),
``confusion_matrix.png``, ``reliability_diagram.png`` (before/after temperature scaling),
``modality_subsets.csv``/``.png`` (metrics with only some modalities present),
``robustness.csv``/``.png`` (noise sweeps), ``importance.csv``/``.png`` (per modality),
``efficiency.json`` (the head's size and latency), ``serving_inputs.parquet`` (raw test requests
for the served-model profile, which the register stage runs on the model it promotes),
``predictions.parquet`` (id, label, predicted, calibrated
p_<class>, as served) and ``report.html`` (all of it on one page).

:func:`evaluate` is a list of small sections, each taking what it needs and returning
its metrics (and writing its files), in the style of Made-With-ML's ``evaluate.py``.
Each unimodal baseline is scored on the same test split — with ``fusion.method: auto``
the cross-validated unimodal candidate, otherwise the configured method trained the same
way on one modality — so ``fusion_gain_macro_f1`` (fused minus best unimodal) shows what
fusion buys. With ``auto``, ``model_choice.csv`` ranks every candidate by CV macro-F1.

Example
-------
>>> r = evaluate(cfg, Path("features"), Path("model"), Path("eval"))   # doctest: +SKIP
>>> r.metrics["test_macro_f1"], r.metrics["baseline_text_test_macro_f1"]  # doctest: +SKIP
(0.99, 0.33)
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import classification_report, confusion_matrix

from crossfuse.atomic import atomic_path, write_json, write_text
from crossfuse.config import RunConfig
from crossfuse.data.modalities import get_modality
from crossfuse.data.preprocess import read_samples
from crossfuse.errors import UserError
from crossfuse.evaluation.efficiency import efficiency_metrics, inference_ms_per_sample
from crossfuse.evaluation.examples import (
    write_misclassified,
    write_request_example,
    write_training_curves,
)
from crossfuse.evaluation.importance import importance_metrics, modality_importance, plot_importance
from crossfuse.evaluation.modality_subsets import plot_subset_heatmap, subset_metrics
from crossfuse.evaluation.report import (
    DATA_FILE,
    DATA_WARNINGS_FILE,
    FUSED_VS_SINGLE_FILE,
    render_report,
    single_modality_scores,
)
from crossfuse.evaluation.robustness import (
    feature_noise_rows,
    noise_levels,
    plot_robustness,
    raw_noise_rows,
    robustness_metrics,
)
from crossfuse.features.extract import extract, is_finetuned, model_encoders
from crossfuse.features.store import FeatureSet, read_feature_set
from crossfuse.fusion import FUSION_METHODS, FusionHead, load_fusion_head
from crossfuse.fusion.model import RUN_CONFIG_FILE
from crossfuse.metrics import (
    SplitScores,
    bootstrap_scores,
    classification_metrics,
    interval,
    metric_name,
    predict_split,
)
from crossfuse.plots import plot_confusion, plot_fused_vs_single
from crossfuse.registry.promotion import paired_bootstrap
from crossfuse.registry.serving import FusionPredictor
from crossfuse.registry.serving_profile import SERVING_INPUTS_FILE
from crossfuse.training.calibration import apply_temperature, expected_calibration_error, plot_reliability
from crossfuse.training.loop import fit
from crossfuse.training.selection import UNIMODAL_METHOD
from crossfuse.training.train import BASELINES_DIR, SELECTION_FILE
from crossfuse.training.tuning import search

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    report: dict
    confusion: list[list[int]]


def score_test_split(head: FusionHead, fs: FeatureSet, modalities: list[str]) -> SplitScores:
    """``head``'s predictions on the test split; an empty test split is an error."""
    scores = predict_split(head, fs.split_inputs("test", modalities, head.spec.token_inputs))
    if len(scores.labels) == 0:
        raise UserError("the test split is empty; add samples or change preprocess.split")
    return scores


def data_section(fs: FeatureSet, intake: dict[str, float] | None, out_dir: Path) -> None:
    """``data.json``: rows in, used and rejected (``intake``, from the run), the rows of each
    split and each class's rows per split, for the report's data section."""
    index = fs.index
    splits = [s for s in ("train", "val", "test") if (index["split"] == s).any()]
    counts = pd.crosstab(index["label_idx"], index["split"]).reindex(
        index=range(len(fs.labels)), columns=splits, fill_value=0)
    write_json(out_dir / DATA_FILE, {
        "intake": {k: int(v) for k, v in (intake or {}).items()},
        "splits": {s: int((index["split"] == s).sum()) for s in splits},
        "classes": [{"class": name, **{s: int(counts.loc[i, s]) for s in splits}}
                    for i, name in enumerate(fs.labels)]})


def calibration_section(scores: SplitScores, temperature: float, out_dir: Path
                        ) -> tuple[dict[str, float], np.ndarray]:
    """ECE before/after the temperature (fitted on rows the model never trained on), the
    reliability diagram.

    Returns (metrics, calibrated probabilities ``[N, C]``: what the served model answers).
    """
    y, probs = scores.labels, scores.probs
    calibrated = apply_temperature(probs, temperature)
    metrics = {"test_ece": expected_calibration_error(y, probs),
               "test_ece_calibrated": expected_calibration_error(y, calibrated),
               "test_log_loss_calibrated": classification_metrics(y, calibrated)["test_log_loss"]}
    plot_reliability(y, {"uncalibrated": probs, f"temperature {temperature:.2f}": calibrated},
                     out_dir / "reliability_diagram.png", title="test split reliability")
    return metrics, calibrated


def per_class_section(scores: SplitScores, labels: list[str], out_dir: Path, title: str
                      ) -> tuple[dict[str, float], dict, np.ndarray]:
    """Per-class precision/recall/F1 metrics and the confusion matrix figure.

    Returns (metrics, sklearn's classification report dict, confusion matrix ``[C, C]``).
    """
    ids = list(range(len(labels)))
    report = classification_report(scores.labels, scores.predicted, labels=ids, target_names=labels,
                                   output_dict=True, zero_division=0)
    metrics = {f"test_{stat.replace('-score', '')}_{metric_name(name)}": float(report[name][stat])
               for name in labels for stat in ("precision", "recall", "f1-score")}
    cm = confusion_matrix(scores.labels, scores.predicted, labels=ids)
    plot_confusion(cm, labels, out_dir / "confusion_matrix.png", title)
    return metrics, report, cm


@torch.inference_mode()
def extra_target_section(head: FusionHead, fs: FeatureSet, modalities: list[str],
                         out_dir: Path) -> dict[str, float]:
    """Every primary-target metric for each extra target, named ``test_<target>_*``.

    Also writes ``classification_report_<target>.json`` and ``confusion_matrix_<target>.png``.
    """
    metrics = {}
    if not fs.targets:
        return metrics
    inputs = fs.split_inputs("test", modalities, head.spec.token_inputs)
    out = head.eval().forward_all(inputs.vectors, inputs.present, inputs.tokens)
    for target, classes in fs.targets.items():
        y = fs.split_tensors("test", modalities, target)[2].numpy()
        probs = out[target].softmax(-1).numpy()
        metrics.update(classification_metrics(y, probs, prefix=f"test_{target}_"))
        pred, ids = probs.argmax(-1), list(range(len(classes)))
        report = classification_report(y, pred, labels=ids, target_names=classes,
                                       output_dict=True, zero_division=0)
        write_json(out_dir / f"classification_report_{target}.json", report)
        plot_confusion(confusion_matrix(y, pred, labels=ids), classes,
                       out_dir / f"confusion_matrix_{target}.png",
                       f"{target} — test macro-F1 {metrics[f'test_{target}_macro_f1']:.3f}")
    return metrics


def subset_section(head: FusionHead, fs: FeatureSet, out_dir: Path) -> dict[str, float]:
    """The same model with only some modalities present (the others masked as missing)."""
    rows = subset_metrics(head, fs)
    write_text(out_dir / "modality_subsets.csv", pd.DataFrame(rows).to_csv(index=False))
    plot_subset_heatmap(rows, out_dir / "modality_subsets.png", title="test metrics by modalities present")
    metrics = {}
    for r in rows:
        name = r["subset"].replace("+", "_and_")  # MLflow metric names allow no "+"
        metrics[f"present_{name}_test_macro_f1"] = r["macro_f1"]
        metrics[f"present_{name}_test_accuracy"] = r["accuracy"]
    return metrics


def baseline_section(cfg: RunConfig, fs: FeatureSet, model_dir: Path, modalities: list[str],
                     fused: SplitScores, frozen: FeatureSet | None = None) -> dict[str, float]:
    """One unimodal model per modality, scored on the same test split; the fusion gain with
    its paired bootstrap interval (:func:`gain_interval`).

    With ``fusion.method: auto`` these are the cross-validated unimodal candidates the model
    folder keeps (``baselines/<m>/``). Otherwise each is the configured method on one
    modality, given what the fused model was given: with ``fusion.search.trials`` its own
    search, from the same starting settings with the same budget (the fused model's
    searched settings were chosen for the fused model, not for one modality); without,
    the fused model's settings. The saved candidates read the frozen encoders' vectors
    (``frozen``, when the shipped model fine-tuned its own; default ``fs``).
    """
    config_file = Path(model_dir) / RUN_CONFIG_FILE
    used = RunConfig.from_json(config_file.read_text()) if config_file.is_file() else cfg
    method = used.fusion.method if used.fusion.method in FUSION_METHODS else UNIMODAL_METHOD
    metrics, best = {}, None
    for m in modalities:
        saved = Path(model_dir) / BASELINES_DIR / m
        scored_on = fs
        if saved.is_dir():
            head, scored_on = load_fusion_head(saved)[0], frozen or fs
        else:
            fusion, train = used.fusion.model_copy(update={"method": method}), used.train
            if cfg.fusion.search.trials > 0:
                searched = search(fs, cfg.fusion.model_copy(update={"method": method}), cfg.train,
                                  cfg.seed, cfg.fusion.search.trials, cfg.fusion.search.epochs,
                                  modalities=[m])
                fusion, train = searched.fusion, searched.train
            head, _ = fit(fs, fusion, train, used.seed, modalities=[m])
        scores = score_test_split(head, scored_on, [m])
        metrics[f"baseline_{m}_test_accuracy"] = scores.accuracy
        metrics[f"baseline_{m}_test_macro_f1"] = scores.macro_f1
        if best is None or scores.macro_f1 > best.macro_f1:
            best = scores
    metrics["fusion_gain_macro_f1"] = fused.macro_f1 - best.macro_f1
    return {**metrics, **gain_interval(fused, best, len(fs.labels), cfg.registry.bootstrap,
                                       cfg.seed)}


def headline_interval(scores: SplitScores, num_classes: int, resamples: int, seed: int
                      ) -> dict[str, float]:
    """The 95% bootstrap interval of test macro-F1 (over the test rows); {} with 0 resamples."""
    if resamples == 0:
        return {}
    low, high = interval(bootstrap_scores(scores.labels, [scores.predicted], num_classes,
                                          resamples=resamples, seed=seed)[:, 0])
    return {"test_macro_f1_ci_low": low, "test_macro_f1_ci_high": high}


def gain_interval(fused: SplitScores, single: SplitScores, num_classes: int, resamples: int,
                  seed: int) -> dict[str, float]:
    """The fusion gain's 95% paired bootstrap interval: fused minus the best single modality,
    both scored on the same resampled test rows; {} with 0 resamples."""
    if resamples == 0:
        return {}
    paired = paired_bootstrap(fused.labels, fused.predicted, single.predicted, num_classes,
                              resamples=resamples, seed=seed)
    return {"fusion_gain_macro_f1_ci_low": paired.low, "fusion_gain_macro_f1_ci_high": paired.high}


def model_choice_section(model_dir: Path, out_dir: Path, test_macro_f1: float) -> dict[str, float]:
    """With ``fusion.method: auto``: the ranked candidates as ``model_choice.csv`` and metrics.

    ``selection_optimism`` is the winner's CV macro-F1 minus the shipped model's test
    macro-F1: how much the choice flattered the model it chose (noise included).
    """
    selection_file = Path(model_dir) / SELECTION_FILE
    if not selection_file.is_file():
        return {}
    selection = json.loads(selection_file.read_text())
    rows = [{"rank": i + 1, **{k: v for k, v in r.items() if k not in ("folds", "members")},
             "members": ", ".join(f"{n} {w:.2f}" for n, w in r.get("members", {}).items())}
            for i, r in enumerate(selection["ranked"])]
    write_text(out_dir / "model_choice.csv", pd.DataFrame(rows).to_csv(index=False))
    winner_cv = selection["ranked"][0]["cv_macro_f1_mean"]
    write_json(out_dir / "model_choice.json", {
        **{k: selection[k] for k in ("winner", "verdict", "folds", "holdout", "rows", "shipped",
                                     "calibration_rows", "temperature", "seconds")
           if k in selection},
        "winner_cv_macro_f1": winner_cv, "test_macro_f1": test_macro_f1,
        "optimism": winner_cv - test_macro_f1})
    best = {}
    for r in selection["ranked"]:
        best.setdefault(r["kind"], r["cv_macro_f1_mean"])
    return {**{f"cv_best_{kind}_macro_f1": value for kind, value in best.items()},
            "selection_optimism": winner_cv - test_macro_f1}


def raw_test_inputs(fs: FeatureSet, samples: pd.DataFrame, preprocessed: Path,
                    modalities: list[str], limit: int, cfg: RunConfig) -> pd.DataFrame:
    """The first ``limit`` test samples as a client sends them (text, base64 media bytes).

    ``samples``: the preprocessed ``samples.parquet``; media cells name items in ``preprocessed``.
    """
    samples = samples.set_index("id")
    ids = fs.index.loc[fs.index["split"] == "test", "id"].head(limit)
    frame = pd.DataFrame(index=range(len(ids)))
    for m in modalities:
        values = samples.loc[ids, m].tolist()
        modality = get_modality(m)
        reader = modality.reader(preprocessed) if modality.media else None
        frame[m] = [None if not v else (base64.b64encode(modality.request_bytes(
            reader.load([v])[0], cfg)).decode("ascii") if reader else v) for v in values]
    return frame


def robustness_section(cfg: RunConfig, head: FusionHead, fs: FeatureSet, model_dir: Path,
                       out_dir: Path, samples: pd.DataFrame | None, preprocessed: Path | None
                       ) -> dict[str, float]:
    """Noise sweeps on the features and (with the preprocessed samples) on the raw inputs."""
    rob = cfg.evaluate.robustness
    levels = noise_levels(rob.levels)
    rows = feature_noise_rows(head, fs, levels, cfg.seed) if rob.features else []
    if rob.raw and samples is not None:
        predictor = FusionPredictor(model_dir, export_dir=Path(cfg.extract.cache_dir) / "onnx",
                                    device=cfg.extract.device)  # placed as extract placed them
        rows += raw_noise_rows(predictor, fs, samples, preprocessed, levels,
                               cfg.seed, rob.raw_max_samples, Path(cfg.extract.cache_dir))
    if not rows:
        return {}
    write_text(out_dir / "robustness.csv", pd.DataFrame(rows).to_csv(index=False))
    plot_robustness(rows, out_dir / "robustness.png")
    return robustness_metrics(rows)


def importance_section(cfg: RunConfig, head: FusionHead, fs: FeatureSet, out_dir: Path
                       ) -> dict[str, float]:
    """Drop and permutation importance of each modality."""
    rows = modality_importance(head, fs, cfg.evaluate.permutation_repeats, cfg.seed)
    write_text(out_dir / "importance.csv", pd.DataFrame(rows).to_csv(index=False))
    plot_importance(rows, out_dir / "importance.png")
    return importance_metrics(rows)


def efficiency_section(cfg: RunConfig, head: FusionHead, fs: FeatureSet, out_dir: Path,
                       samples: pd.DataFrame | None, preprocessed: Path | None) -> dict[str, float]:
    """Parameters and features->prediction latency; with raw samples, the requests on which
    the register stage profiles the served model if it promotes it (``serving_inputs.parquet``)."""
    modalities = list(head.spec.dims)
    features_ms = inference_ms_per_sample(
        head, fs.split_inputs("test", modalities, head.spec.token_inputs), repeats=5)
    if samples is not None and cfg.evaluate.efficiency_samples > 0:
        requests = raw_test_inputs(fs, samples, preprocessed, modalities,
                                   cfg.evaluate.efficiency_samples, cfg)
        with atomic_path(out_dir / SERVING_INPUTS_FILE) as tmp:
            requests.to_parquet(tmp, index=False)
    write_json(out_dir / "efficiency.json", {"features_ms_per_sample": features_ms})
    return efficiency_metrics(head, features_ms)


def write_predictions(fs: FeatureSet, scores: SplitScores, calibrated: np.ndarray,
                      out_dir: Path) -> pd.DataFrame:
    """``predictions.parquet``: id, label, predicted and the calibrated ``p_<class>`` per test row."""
    test_index = fs.index[fs.index["split"] == "test"].reset_index(drop=True)
    predictions = pd.DataFrame({"id": test_index["id"], "label": test_index["label"],
                                "predicted": [fs.labels[i] for i in scores.predicted]})
    for i, name in enumerate(fs.labels):
        predictions[f"p_{name}"] = calibrated[:, i]
    with atomic_path(out_dir / "predictions.parquet") as tmp:
        predictions.to_parquet(tmp, index=False)
    return predictions


def shipped_features(cfg: RunConfig, features: Path, model_dir: Path, meta: dict,
                     preprocessed: Path | None, out_dir: Path) -> Path:
    """The features the shipped model reads: ``features`` (the frozen encoders'), or for a
    fine-tuned model the preprocessed items encoded again by its adapted encoders (into
    ``out_dir/features``; the feature cache holds most of them from training)."""
    if not is_finetuned(meta["encoders"]):
        return features
    if preprocessed is None:
        raise UserError("this model fine-tuned its encoders: evaluate it with the preprocessed "
                        "folder (the pipeline passes it), so its own encoders make the test vectors")
    out = Path(out_dir) / "features"
    extract(cfg, preprocessed, out, encoders=model_encoders(cfg, model_dir, meta["encoders"]))
    return out


def evaluate(cfg: RunConfig, features: Path, model_dir: Path, out_dir: Path,
             preprocessed: Path | None = None, context: dict[str, str] | None = None,
             data_warnings: list[str] | None = None,
             intake: dict[str, float] | None = None) -> EvaluationResult:
    """Evaluate the trained model in ``model_dir`` on the test split of ``features``.

    ``preprocessed`` (the preprocess stage's folder) enables the raw-input noise
    sweeps, the raw-input latency and peak memory; ``context`` heads the HTML report;
    ``data_warnings`` (validation's) get a section of their own near its top; ``intake``
    (``rows_in``, ``rows_used``, ``rows_rejected``) heads its data section.
    """
    out_dir, model_dir = Path(out_dir), Path(model_dir)
    preprocessed = None if preprocessed is None else Path(preprocessed)
    out_dir.mkdir(parents=True, exist_ok=True)
    head, meta = load_fusion_head(model_dir)
    own = shipped_features(cfg, Path(features), model_dir, meta, preprocessed, out_dir)
    fs = read_feature_set(own)
    frozen = fs  # the frozen encoders' vectors: what auto's saved baselines read
    if own != Path(features):  # read into memory: the re-encoded copy need not stay on disk
        shutil.rmtree(own)
        if (model_dir / BASELINES_DIR).is_dir():
            frozen = read_feature_set(Path(features))
    modalities = list(meta["dims"])
    multimodal = len(modalities) > 1
    samples = read_samples(preprocessed)[0] if preprocessed is not None else None

    scores = score_test_split(head, fs, modalities)
    data_section(fs, intake, out_dir)
    metrics = {**classification_metrics(scores.labels, scores.probs),
               **headline_interval(scores, len(fs.labels), cfg.registry.bootstrap, cfg.seed),
               "test_samples": float(len(scores.labels))}
    calibration, calibrated = calibration_section(scores, float(meta.get("temperature", 1.0)), out_dir)
    calibration.update({"calibration_temperature": float(meta.get("temperature", 1.0)),
                        "calibration_rows": float(meta.get("calibration_rows", 0))})
    model_name = meta.get("chosen") or f"{cfg.fusion.method} fusion"
    per_class, report, cm = per_class_section(
        scores, fs.labels, out_dir, f"{model_name} — test macro-F1 {metrics['test_macro_f1']:.3f}")
    metrics.update({**calibration, **per_class, **extra_target_section(head, fs, modalities, out_dir)})
    if multimodal:
        metrics.update(subset_section(head, fs, out_dir))
    metrics.update(model_choice_section(model_dir, out_dir, metrics["test_macro_f1"]))
    if multimodal and cfg.evaluate.unimodal_baselines:
        metrics.update(baseline_section(cfg, fs, model_dir, modalities, scores, frozen))
        plot_fused_vs_single((meta.get("chosen") or cfg.fusion.method, metrics["test_macro_f1"]),
                             single_modality_scores(metrics), out_dir / FUSED_VS_SINGLE_FILE)
    metrics.update(robustness_section(cfg, head, fs, model_dir, out_dir, samples, preprocessed))
    if multimodal:
        metrics.update(importance_section(cfg, head, fs, out_dir))
    if cfg.evaluate.efficiency:
        metrics.update(efficiency_section(cfg, head, fs, out_dir, samples, preprocessed))

    predictions = write_predictions(fs, scores, calibrated, out_dir)
    write_misclassified(predictions, samples, preprocessed, out_dir)
    write_training_curves(model_dir, out_dir)
    if samples is not None:
        write_request_example(raw_test_inputs(fs, samples, preprocessed, modalities, 1, cfg),
                              out_dir)
    write_json(out_dir / "classification_report.json", report)
    write_json(out_dir / DATA_WARNINGS_FILE, list(data_warnings or []))
    write_json(out_dir / "metrics.json", metrics, sort_keys=True)  # last: the stage's result
    render_report(out_dir, {"dataset": cfg.data.dataset_name(), "fusion": cfg.fusion.method,
                            "modalities": "+".join(modalities), **(context or {})})
    log.info("test macro-F1 %.4f, accuracy %.4f", metrics["test_macro_f1"], metrics["test_accuracy"])
    return EvaluationResult(metrics=metrics, report=report, confusion=cm.tolist())
