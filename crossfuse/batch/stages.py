"""The batch pipeline's stages as plain functions over folders, each logging to the batch's
MLflow run (experiment ``<model>-predictions``).

=================  ====================================  ==============================
stage              what it does                          component
=================  ====================================  ==============================
batch validate     resolve the model, fetch its folder,  ``components/batch.py``
                   validate (labels optional)
batch preprocess   the model's transforms                ``components/batch.py``
extract            the training pipeline's, per part     ``components/extract.py``
batch score        predict, drift, report; ends the run  ``components/batch.py``
=================  ====================================  ==============================

Example
-------
>>> result = run_batch_in_process(cfg, Path("out"))     # doctest: +SKIP
>>> result.rows_scored, result.flagged                  # doctest: +SKIP
(720, [])
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow

from crossfuse.atomic import write_json
from crossfuse.batch.model import (
    ModelRef,
    default_model_spec,
    fetch_model_dir,
    model_labels,
    model_modalities,
    read_model_ref,
    resolve_model,
    scoring_config,
)
from crossfuse.config import RunConfig
from crossfuse.console import say
from crossfuse.data.dvc import materialise_data
from crossfuse.data.validation.report import ValidationReport, require_valid, validation_tags
from crossfuse.errors import reported
from crossfuse.stage_records import tree_digest
from crossfuse.storage import attach
from crossfuse.tracking import data_version, log_metrics, stage_run

log = logging.getLogger(__name__)

BATCH_ARTIFACTS = "batch"


@dataclass
class BatchResult:
    """One scored batch: its MLflow run, the model version, the row counts, where the
    predictions and the report are, and the drift reasons (empty: none)."""

    run_id: str
    model: str
    version: str
    rows_in: int
    rows_scored: int
    rows_rejected: int
    predictions: str
    report: str
    flagged: list[str]
    drift_checked: bool  # every figure compared, the embeddings included
    drift_verdict: str = ""  # flagged, none or not checked (drift_verdict)


def drift_verdict(drift, note: str) -> str:
    """``flagged`` when a figure crossed its threshold; ``none`` only when every figure,
    the embeddings included, was compared; else ``not checked`` (``note`` says why), so a
    missing reference never reads as "no drift".

    >>> drift_verdict(None, "no training rows")
    'not checked'
    """
    if drift is not None and drift.flagged:
        return "flagged"
    return "none" if drift is not None and not note else "not checked"


def batch_run_tags(cfg: RunConfig, ref: ModelRef) -> dict[str, str]:
    """What a batch run says about itself: the model version it scored with, and a description."""
    return {"crossfuse.model_name": ref.name, "crossfuse.model_version": ref.version,
            "crossfuse.model_alias": ref.alias, "crossfuse.model_uri": ref.uri,
            "crossfuse.training_run_id": ref.run_id,
            "mlflow.note.content": (f"crossfuse batch prediction: {cfg.data.path} scored with "
                                    f"{ref.describe()}; drift against its training data."),
            "mlflow.source.name": "crossfuse batch prediction (pipelines/batch_predict.py)",
            "mlflow.source.type": "PROJECT"}


@reported
def run_batch_validate(cfg: RunConfig, validation_dir: Path, model_dir: Path
                       ) -> tuple[str, RunConfig, ValidationReport]:
    """Resolve ``predict.model`` to a version, fetch its folder into ``model_dir``, create the
    batch's MLflow run and validate ``cfg.data.path`` against the model.

    Returns (run id, the scoring config, the report). Raises
    :class:`crossfuse.data.validation.ValidationFailed` (the run is marked FAILED) when the
    data does not pass.
    """
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.data.validation.validate import validate
    from crossfuse.preflight import preflight
    from crossfuse.stages import log_dataset

    preflight(cfg, folders=False)
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    ref = resolve_model(default_model_spec(cfg), cfg.model_name())
    fetch_model_dir(ref, Path(model_dir))
    scoring = scoring_config(cfg, Path(model_dir), ref)
    with stage_run(scoring, None, "validate", tags=batch_run_tags(scoring, ref),
                   run_name=f"{scoring.data.dataset_name()}-{ref.name}-v{ref.version}") as run:
        scoring = materialise_data(scoring)
        data = Path(scoring.data.path)
        version = data_version(data, scoring.data.pinned, scoring.data.remote)
        if "data.dvc_md5" not in version:
            version["data.content_sha256"] = tree_digest(data)
        mlflow.set_tags(version)
        say(f"scoring {data} with {ref.describe()}")
        report = validate(scoring, data, Path(validation_dir), model_labels=model_labels(model_dir))
        log_dataset(scoring, version, context="scoring")
        if report.can_continue:  # else the summary is the error's message
            say(report.summary())
        log_metrics({"batch_rows_in": report.n_rows, "batch_rows_rejected": report.n_rejected})
        mlflow.set_tags(validation_tags(report))
        for name in ("report.json", "rejects.csv"):
            mlflow.log_artifact(str(Path(validation_dir) / name), "validation")
        require_valid(report)
    return run.info.run_id, scoring, report


@reported
def run_batch_preprocess(cfg: RunConfig, run_id: str, validation_dir: Path, model_dir: Path,
                         out_dir: Path) -> int:
    """Prepare the valid rows with the model's transforms (``cfg`` is the scoring config);
    returns the rows prepared."""
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.data.preprocess import preprocess
    from crossfuse.features.extract import carry_model_encoders

    with stage_run(cfg, run_id, "preprocess"):
        report = ValidationReport.read(Path(validation_dir))
        result = preprocess(cfg, Path(cfg.data.path), Path(out_dir), report.rejected_lines,
                            model_labels=model_labels(model_dir))
        # A fine-tuned model's own encoders travel with the items to the extract steps.
        carry_model_encoders(Path(model_dir), Path(out_dir))
        if result.n_samples + report.n_rejected != report.n_rows:  # nothing may be lost
            raise RuntimeError(f"row accounting broke: {report.n_rows} rows in, "
                               f"{result.n_samples} prepared, {report.n_rejected} rejected")
    return result.n_samples


def _training_rows(model_dir: Path):
    """(the model's training rows, or None and why not): :func:`reference_rows`."""
    from crossfuse.features.reference import reference_rows

    try:
        return reference_rows(model_dir), ""
    except FileNotFoundError as exc:
        return None, str(exc)


def _trained_hashes(training, model_dir: Path) -> tuple[dict[str, set[str]] | None, str]:
    """(the content hashes of the model's training rows per modality, or None; why None).

    None when the model kept no training rows, or kept media hashes made before media were
    stored as arrays: rows that match nothing would be claimed unseen, so ``in_training`` is
    left unknown instead.
    """
    from crossfuse.data.modalities import get_modality
    from crossfuse.features.reference import media_hashes_comparable

    if training is None:
        return None, ""
    modalities = model_modalities(model_dir)
    if any(get_modality(m).media for m in modalities) and not media_hashes_comparable(model_dir):
        return None, ("whether a row is in the model's training data is not known: the model "
                      "kept its training images' and audio's hashes from before crossfuse stored "
                      "them as arrays; a model trained since then has them")
    return {m: set(training[f"hash_{m}"]) - {""} for m in modalities}, ""


def _drift(cfg: RunConfig, model_dir: Path, rows, scored, labels: list[str]):
    """(the drift report, or None; why not or what was left out) of a scored batch against the
    model's training ``rows``."""
    import numpy as np

    from crossfuse.features.reference import load_reference
    from crossfuse.monitoring.drift import assess_drift

    note = ""
    try:
        vectors = load_reference(model_dir, Path(cfg.extract.cache_dir), rows).vectors
    except FileNotFoundError as exc:  # label and missing-modality drift still count
        vectors, note = {}, f"embedding drift not checked: {exc}"
        log.warning("%s", note)
    present = {m: rows[f"present_{m}"].to_numpy(dtype=bool) for m in scored.drift.present}
    predicted = np.asarray(labels, dtype=object)[scored.predicted]
    report = assess_drift(vectors, scored.drift.vectors, present, scored.drift.presence(),
                          rows["label"].tolist(), predicted, labels, cfg.drift, cfg.seed)
    return report, note


@reported
def run_batch_score(cfg: RunConfig, run_id: str, model_dir: Path, validation_dir: Path,
                    parts: list[Path], out_dir: Path) -> BatchResult:
    """Score the extracted parts, check drift, write ``predictions.parquet``, ``drift.json``,
    ``metrics.json`` and ``report.html`` into ``out_dir``, log them; ends the run."""
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.batch.report import BATCH_REPORT_FILE, PREDICTIONS_CHART, BatchSummary, render_batch_report
    from crossfuse.batch.score import PREDICTIONS_FILE, score
    from crossfuse.features.extract import combined_result
    from crossfuse.plots import plot_predictions
    from crossfuse.stages import log_extract_result

    out_dir, model_dir = Path(out_dir), Path(model_dir)
    ref = read_model_ref(model_dir)
    labels = model_labels(model_dir)
    with stage_run(cfg, run_id, "score", final=True) as run:
        log_extract_result(combined_result(parts))
        report = ValidationReport.read(Path(validation_dir))
        training, why_not = _training_rows(model_dir)
        trained, unknown = _trained_hashes(training, model_dir)
        scored = score(model_dir, parts, out_dir, labelled=sum(report.class_counts.values()) > 0,
                       shard_size=cfg.extract.shard_size, model_version=ref.version,
                       drift_samples=cfg.drift.max_samples, seed=cfg.seed, trained=trained)
        if scored.n_scored + report.n_rejected != report.n_rows:
            raise RuntimeError(f"row accounting broke: {report.n_rows} rows in, "
                               f"{scored.n_scored} scored, {report.n_rejected} rejected")
        drift, note = (None, why_not) if training is None else _drift(cfg, model_dir, training,
                                                                      scored, labels)
        metrics = {"batch_rows_scored": scored.n_scored, "batch_rows_labelled": scored.n_labelled,
                   **scored.metrics, **(drift.metrics if drift else {})}
        if trained is not None:
            metrics["batch_rows_in_training"] = scored.n_in_training
            metrics["batch_rows_labelled_in_training"] = scored.n_labelled_in_training
        chart = plot_predictions(labels, scored.predicted, scored.confidence,
                                 out_dir / PREDICTIONS_CHART)
        if drift:
            metrics["drift_flagged"] = len(drift.flagged)
        log_metrics(metrics)
        verdict, checked = drift_verdict(drift, note), drift is not None and not note
        reasons = [*(drift.flagged if drift else []), *([note] if note else [])]
        mlflow.set_tags({"crossfuse.drift": verdict,
                         "crossfuse.drift.reasons": "; ".join(reasons)[:5000]})
        write_json(out_dir / "metrics.json", metrics, sort_keys=True)
        write_json(out_dir / "drift.json", {"checked": checked, "verdict": verdict,
                                            "note": note,
                                            **(asdict(drift) if drift else {})})
        summary = BatchSummary(dataset=cfg.data.dataset_name(), model=ref.describe(),
                               rows_in=report.n_rows, rows_scored=scored.n_scored,
                               rows_rejected=report.n_rejected, drift=drift,
                               thresholds=cfg.drift, metrics=scored.metrics, drift_note=note,
                               rows_in_training=None if trained is None else scored.n_in_training,
                               labelled_in_training=scored.n_labelled_in_training, chart=chart,
                               least_confident=scored.least_confident.to_dict("records"),
                               facts={"MLflow run": run.info.run_id,
                                      "data": run.data.tags.get("data.dvc_md5")
                                      or run.data.tags.get("data.content_sha256", "")})
        page = render_batch_report(out_dir / BATCH_REPORT_FILE, summary)
        for name in (PREDICTIONS_FILE, "metrics.json", "drift.json", BATCH_REPORT_FILE,
                     PREDICTIONS_CHART):
            mlflow.log_artifact(str(out_dir / name), BATCH_ARTIFACTS)
        say(f"rows in {report.n_rows} = scored {scored.n_scored} + rejected {report.n_rejected}"
            + (f"; {scored.n_labelled} labelled rows the model never trained on: macro-F1 "
               f"{scored.metrics['labelled_macro_f1']:.4f}, accuracy "
               f"{scored.metrics['labelled_accuracy']:.4f}" if scored.metrics else ""))
        if unknown:
            say(f"  {unknown}")
        if scored.n_in_training:
            say(f"  {scored.n_in_training} of the {scored.n_scored} rows are in the model's "
                f"training data (same content; in_training in the predictions)"
                + (f": their {scored.n_labelled_in_training} labels are left out of the "
                   f"metrics" if scored.n_labelled_in_training else ""))
        say(f"drift: {'; '.join(drift.flagged) if verdict == 'flagged' else verdict}"
            + (f" ({note})" if note else ""))
        link_to_model_version(ref, run.info.run_id, run.info.experiment_id, verdict)
    return BatchResult(run_id=run.info.run_id, model=ref.name, version=ref.version,
                       rows_in=report.n_rows, rows_scored=scored.n_scored,
                       rows_rejected=report.n_rejected, predictions=str(out_dir / PREDICTIONS_FILE),
                       report=str(page), flagged=list(drift.flagged) if drift else [],
                       drift_checked=checked, drift_verdict=verdict)


def link_to_model_version(ref: ModelRef, run_id: str, experiment_id: str, drift: str) -> None:
    """Tag the model version with its latest batch run and where to find all of them (the
    batch experiment, filtered on this version), so its page in the registry leads to them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    search = f"tags.`crossfuse.model_version` = '{ref.version}'"
    for key, value in {"crossfuse.batch.last_run": run_id, "crossfuse.batch.last_drift": drift,
                       "crossfuse.batch.runs": f"experiment {experiment_id}, search: {search}"
                       }.items():
        client.set_model_version_tag(ref.name, ref.version, key, value)


def run_batch_in_process(cfg: RunConfig, root: Path) -> BatchResult:
    """Every batch stage in this process, chained as the batch pipeline chains them, with
    outputs in ``root/{validation,model,pre,features-0,predictions}``."""
    from crossfuse.stages import run_extract

    root = Path(root)
    run_id, scoring, _ = run_batch_validate(cfg, root / "validation", root / "model")
    run_batch_preprocess(scoring, run_id, root / "validation", root / "model", root / "pre")
    run_extract(scoring, run_id, root / "pre", root / "features-0", part=(0, 1))
    return run_batch_score(scoring, run_id, root / "model", root / "validation",
                           [root / "features-0"], root / "predictions")


def batch_result_json(result: BatchResult) -> str:
    """The result as JSON (what the KFP score step returns to the caller)."""
    return json.dumps(asdict(result))
