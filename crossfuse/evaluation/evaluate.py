"""Stage 5, evaluate: test metrics of the fused model, and unimodal baselines beside it.

Writes to ``out_dir``: ``metrics.json`` (flat name -> value, ready for MLflow),
``classification_report.json`` (per-class precision/recall/F1/support),
``confusion_matrix.png``, ``reliability_diagram.png`` (before/after temperature scaling),
``modality_subsets.csv``/``.png`` (metrics with only some modalities present),
``robustness.csv``/``.png`` (noise sweeps), ``importance.csv``/``.png`` (per modality),
``efficiency.json``, ``predictions.parquet`` (id, label, predicted, calibrated
p_<class>, as served) and ``report.html`` (all of it on one page).

Each unimodal baseline is the configured fusion method trained the same way on
one modality's features, so ``fusion_gain_macro_f1`` (fused minus best unimodal)
shows what fusion buys.

Example
-------
>>> r = evaluate(cfg, Path("features"), Path("model"), Path("eval"))   # doctest: +SKIP
>>> r.metrics["test_macro_f1"], r.metrics["baseline_text_test_macro_f1"]  # doctest: +SKIP
(0.99, 0.33)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    roc_auc_score,
)

from crossfuse.atomic import atomic_path, write_json, write_text  # noqa: E402
from crossfuse.training.calibration import (  # noqa: E402
    apply_temperature,
    expected_calibration_error,
    plot_reliability,
)
from crossfuse.config import RunConfig  # noqa: E402
from crossfuse.evaluation.efficiency import (  # noqa: E402
    efficiency_metrics,
    inference_ms_per_sample,
    measure_serving,
)
from crossfuse.features.store import FeatureSet, read_feature_set  # noqa: E402
from crossfuse.fusion import FusionHead, load_fusion_head, predict_proba  # noqa: E402
from crossfuse.fusion.model import RUN_CONFIG_FILE  # noqa: E402
from crossfuse.evaluation.importance import importance_metrics, modality_importance, plot_importance  # noqa: E402
from crossfuse.evaluation.modality_subsets import plot_subset_heatmap, subset_metrics  # noqa: E402
from crossfuse.data.preprocess import read_samples  # noqa: E402
from crossfuse.evaluation.report import render_report  # noqa: E402
from crossfuse.evaluation.robustness import (  # noqa: E402
    feature_noise_rows,
    noise_levels,
    plot_robustness,
    raw_noise_rows,
    robustness_metrics,
)
from crossfuse.training.loop import fit, macro_f1, split_tensors, split_tokens  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    report: dict
    confusion: list[list[int]]


def score_test_split(head: FusionHead, fs: FeatureSet, modalities: list[str]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, predicted labels, probabilities ``[N_test, C]``) on the test split."""
    x, present, y = split_tensors(fs, "test", modalities)
    if len(y) == 0:
        raise ValueError("the test split is empty; add samples or change preprocess.split")
    probs = predict_proba(head, x, present, split_tokens(fs, "test", modalities, head.spec)).numpy()
    return y.numpy(), probs.argmax(-1), probs


def classification_metrics(y: np.ndarray, probs: np.ndarray, prefix: str = "test_"
                           ) -> dict[str, float]:
    """Accuracy, macro/micro F1, one-vs-rest AUROC and AUPRC (macro over classes), log loss.

    Parameters
    ----------
    y: true class ids ``[N]``.
    probs: class probabilities ``[N, C]``.
    prefix: metric name prefix, e.g. ``test_`` or ``test_<target>_``.

    AUROC/AUPRC average over the classes that have both positives and negatives in ``y``
    (others have no defined curve); absent classes still count in macro-F1 as 0.

    >>> m = classification_metrics(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.6, .4]]))
    >>> round(m["test_accuracy"], 3), round(m["test_auroc_ovr"], 3)
    (0.667, 1.0)
    """
    k = probs.shape[1]
    pred = probs.argmax(-1)
    metrics = {f"{prefix}accuracy": float((pred == y).mean()),
               f"{prefix}macro_f1": macro_f1(y, pred, k),
               f"{prefix}micro_f1": float(f1_score(y, pred, labels=list(range(k)), average="micro",
                                                   zero_division=0)),
               f"{prefix}log_loss": float(log_loss(y, np.clip(probs, 1e-12, 1.0), labels=list(range(k))))}
    aurocs, auprcs = [], []
    for c in range(k):
        positives = y == c
        if 0 < positives.sum() < len(y):
            aurocs.append(roc_auc_score(positives, probs[:, c]))
            auprcs.append(average_precision_score(positives, probs[:, c]))
    if aurocs:
        metrics[f"{prefix}auroc_ovr"] = float(np.mean(aurocs))
        metrics[f"{prefix}auprc_ovr"] = float(np.mean(auprcs))
    return metrics


@torch.inference_mode()
def extra_target_metrics(head: FusionHead, fs: FeatureSet, modalities: list[str],
                         out_dir: Path) -> dict[str, float]:
    """Every primary-target metric for each extra target, named ``test_<target>_*``.

    Also writes ``classification_report_<target>.json`` and ``confusion_matrix_<target>.png``.
    """
    metrics = {}
    if not fs.targets:
        return metrics
    x, present, _ = split_tensors(fs, "test", modalities)
    out = head.eval().forward_all(x, present, split_tokens(fs, "test", modalities, head.spec))
    for target, classes in fs.targets.items():
        y = split_tensors(fs, "test", modalities, target)[2].numpy()
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


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    """Save a labelled confusion-matrix heatmap (rows = true, columns = predicted)."""
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > threshold else "black", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def raw_test_inputs(fs: FeatureSet, samples: pd.DataFrame, preprocessed: Path,
                    modalities: list[str], limit: int) -> pd.DataFrame:
    """The first ``limit`` test samples as the served model takes them (text, image path).

    ``samples``: the preprocessed ``samples.parquet``; image paths are relative to ``preprocessed``.
    """
    samples = samples.set_index("id")
    ids = fs.index.loc[fs.index["split"] == "test", "id"].head(limit)
    frame = pd.DataFrame(index=range(len(ids)))
    for m in modalities:
        values = samples.loc[ids, m].tolist()
        frame[m] = [None if not v else (str(Path(preprocessed).resolve() / v) if m == "image"
                                        else v) for v in values]
    return frame


def analyse(cfg: RunConfig, head: FusionHead, fs: FeatureSet, model_dir: Path, out_dir: Path,
            preprocessed: Path | None) -> dict[str, float]:
    """Robustness sweeps, modality importance and efficiency; writes their files to ``out_dir``.

    The raw-input parts (raw noise, raw latency, peak memory) need the preprocessed
    folder and are skipped without it.
    """
    from crossfuse.registry.serving import FusionPredictor

    ev, metrics = cfg.evaluate, {}
    modalities = list(head.spec.dims)
    levels = noise_levels(ev.robustness.levels)
    rows = feature_noise_rows(head, fs, levels, cfg.seed) if ev.robustness.features else []
    samples = read_samples(preprocessed)[0] if preprocessed is not None else None
    if ev.robustness.raw and samples is not None:
        rows += raw_noise_rows(FusionPredictor(model_dir), fs, samples, preprocessed, levels,
                               cfg.seed, ev.robustness.raw_max_samples)
    if rows:
        write_text(out_dir / "robustness.csv", pd.DataFrame(rows).to_csv(index=False))
        plot_robustness(rows, out_dir / "robustness.png")
        metrics.update(robustness_metrics(rows))

    if len(modalities) > 1:
        importance = modality_importance(head, fs, ev.permutation_repeats, cfg.seed)
        write_text(out_dir / "importance.csv", pd.DataFrame(importance).to_csv(index=False))
        plot_importance(importance, out_dir / "importance.png")
        metrics.update(importance_metrics(importance))

    if ev.efficiency:
        x, present, _ = split_tensors(fs, "test", modalities)
        features_ms = inference_ms_per_sample(head, x, present,
                                              split_tokens(fs, "test", modalities, head.spec),
                                              repeats=5)
        serving = {}
        if samples is not None and ev.efficiency_samples > 0:
            serving = measure_serving(model_dir, raw_test_inputs(
                fs, samples, preprocessed, modalities, ev.efficiency_samples))
        write_json(out_dir / "efficiency.json", {"features_ms_per_sample": features_ms, **serving})
        metrics.update(efficiency_metrics(head, features_ms, serving))
    return metrics


def evaluate(cfg: RunConfig, features: Path, model_dir: Path, out_dir: Path,
             preprocessed: Path | None = None, context: dict[str, str] | None = None
             ) -> EvaluationResult:
    """Evaluate the trained model in ``model_dir`` on the test split of ``features``.

    ``preprocessed`` (the preprocess stage's folder) enables the raw-input noise
    sweeps and the raw-input latency; ``context`` heads the HTML report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fs = read_feature_set(Path(features))
    head, meta = load_fusion_head(Path(model_dir))
    modalities = list(meta["dims"])
    labels = fs.labels
    y, pred, probs = score_test_split(head, fs, modalities)
    k = len(labels)
    metrics = {**classification_metrics(y, probs), "test_samples": float(len(y))}
    # Calibration: the served model applies the validation-fitted temperature.
    temperature = float(meta.get("temperature", 1.0))
    calibrated = apply_temperature(probs, temperature)
    metrics.update({"test_ece": expected_calibration_error(y, probs),
                    "test_ece_calibrated": expected_calibration_error(y, calibrated),
                    "test_log_loss_calibrated": classification_metrics(y, calibrated)["test_log_loss"]})
    plot_reliability(y, {"uncalibrated": probs, f"temperature {temperature:.2f}": calibrated},
                     out_dir / "reliability_diagram.png", title="test split reliability")
    probs = calibrated
    report = classification_report(y, pred, labels=list(range(k)), target_names=labels,
                                   output_dict=True, zero_division=0)
    for name in labels:
        for stat in ("precision", "recall", "f1-score"):
            metrics[f"test_{stat.replace('-score', '')}_{_metric_name(name)}"] = \
                float(report[name][stat])
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    plot_confusion(cm, labels, out_dir / "confusion_matrix.png",
                   f"{cfg.fusion.method} fusion — test macro-F1 {metrics['test_macro_f1']:.3f}")

    metrics.update(extra_target_metrics(head, fs, modalities, out_dir))

    if len(modalities) > 1:
        # The same model with only some modalities present (the others masked as missing).
        subset_rows = subset_metrics(head, fs)
        write_text(out_dir / "modality_subsets.csv", pd.DataFrame(subset_rows).to_csv(index=False))
        plot_subset_heatmap(subset_rows, out_dir / "modality_subsets.png",
                            title="test metrics by modalities present")
        for r in subset_rows:
            name = r["subset"].replace("+", "_and_")  # MLflow metric names allow no "+"
            metrics[f"present_{name}_test_macro_f1"] = r["macro_f1"]
            metrics[f"present_{name}_test_accuracy"] = r["accuracy"]

    if cfg.evaluate.unimodal_baselines and len(modalities) > 1:
        # Baselines train exactly like the fused model, with its (possibly searched) settings.
        config_file = Path(model_dir) / RUN_CONFIG_FILE
        used = RunConfig.from_json(config_file.read_text()) if config_file.is_file() else cfg
        best = 0.0
        for m in modalities:
            base_head, _ = fit(fs, used.fusion, used.train, used.seed, modalities=[m])
            yb, pb, _ = score_test_split(base_head, fs, [m])
            metrics[f"baseline_{m}_test_accuracy"] = float((pb == yb).mean())
            metrics[f"baseline_{m}_test_macro_f1"] = macro_f1(yb, pb, k)
            best = max(best, metrics[f"baseline_{m}_test_macro_f1"])
        metrics["fusion_gain_macro_f1"] = metrics["test_macro_f1"] - best

    metrics.update(analyse(cfg, head, fs, Path(model_dir), out_dir,
                           None if preprocessed is None else Path(preprocessed)))

    test_index = fs.index[fs.index["split"] == "test"].reset_index(drop=True)
    predictions = pd.DataFrame({"id": test_index["id"], "label": test_index["label"],
                                "predicted": [labels[i] for i in pred]})
    for i, name in enumerate(labels):
        predictions[f"p_{name}"] = probs[:, i]
    with atomic_path(out_dir / "predictions.parquet") as tmp:
        predictions.to_parquet(tmp, index=False)
    write_json(out_dir / "classification_report.json", report)
    write_json(out_dir / "metrics.json", metrics, sort_keys=True)  # last: the stage's result
    render_report(out_dir, {"dataset": cfg.data.dataset_name(), "fusion": cfg.fusion.method,
                            "modalities": "+".join(modalities), **(context or {})})
    log.info("test macro-F1 %.4f, accuracy %.4f", metrics["test_macro_f1"],
             metrics["test_accuracy"])
    return EvaluationResult(metrics=metrics, report=report, confusion=cm.tolist())


def _metric_name(label: str) -> str:
    """MLflow metric names allow alphanumerics, ``_ - . /`` and spaces; map the rest to ``_``."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in label)


def read_metrics(out_dir: Path) -> dict[str, float]:
    return json.loads((Path(out_dir) / "metrics.json").read_text())
