"""The pipeline's stages as plain functions over folders, each logging to the run's MLflow run.

Each ``run_<stage>(cfg, run_id, inputs..., outputs...)`` opens the pipeline's MLflow
run (:func:`crossfuse.tracking.stage_run`), calls the stage's library function, and logs
its parameters, metrics and artifacts. The KFP components (``components/``, one file per
stage) are thin wrappers over these; this file is their index:

=============  ==============================================  ===========================
stage          library function                                component
=============  ==============================================  ===========================
validate       :func:`crossfuse.data.validation.validate`      ``components/validate.py``
preprocess     :func:`crossfuse.data.preprocess.preprocess`    ``components/preprocess.py``
extract        :func:`crossfuse.features.extract.extract`      ``components/extract.py``
merge_features :func:`crossfuse.features.extract.merge_features` ``components/extract.py``
train          :func:`crossfuse.training.train.train`          ``components/train.py``
evaluate       :func:`crossfuse.evaluation.evaluate.evaluate`  ``components/evaluate.py``
register       :func:`crossfuse.registry.register.register`    ``components/register.py``
=============  ==============================================  ===========================

Example
-------
>>> run_id, report = run_validate(cfg, None, Path("out/validation"))   # doctest: +SKIP
>>> run_preprocess(cfg, run_id, Path("out/validation"), Path("out/pre"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow

from crossfuse.config import RunConfig
from crossfuse.console import say
from crossfuse.data.dvc import materialise_data
from crossfuse.data.validation.report import (
    ValidationReport,
    require_valid,
    validation_tags,
    warnings_from_tags,
)
from crossfuse.errors import reported
from crossfuse.stage_records import record_key, restore, store
from crossfuse.storage import attach
from crossfuse.tracking import (
    KFP_RUN_TAG,
    RUN_TOKEN_TAG,
    data_version,
    log_metrics,
    run_metrics,
    run_tags,
    stage_run,
)

if TYPE_CHECKING:
    from crossfuse.data.preprocess import PreprocessResult
    from crossfuse.evaluation.evaluate import EvaluationResult
    from crossfuse.features.extract import ExtractResult
    from crossfuse.registry.register import RegisterResult
    from crossfuse.training.loop import TrainResult
    from crossfuse.training.selection import Candidate

# Each stage imports its own library code when it runs: a KFP task is a fresh process, and
# the validate task should not wait for torch, scikit-learn and matplotlib to load.

log = logging.getLogger(__name__)


@reported
def run_validate(cfg: RunConfig, run_id: str | None, out_dir: Path, kfp_run: str = "",
                 run_token: str = "") -> tuple[str, ValidationReport]:
    """Validate ``cfg.data.path`` (pulled first with ``data.remote``); creates the MLflow run
    when ``run_id`` is None.

    Returns (run id, report). Raises :class:`crossfuse.data.validation.ValidationFailed`
    (and marks the run FAILED) when the data does not pass.
    """
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.data.validation.validate import validate
    from crossfuse.preflight import preflight

    out_dir = Path(out_dir)
    preflight(cfg, folders=False)  # before MLflow's client retries an unreachable server for minutes
    tags = {**run_tags(cfg), **({KFP_RUN_TAG: kfp_run} if kfp_run else {}),
            **({RUN_TOKEN_TAG: run_token} if run_token else {})}
    with stage_run(cfg, run_id, "validate", tags=tags) as run:
        cfg = materialise_data(cfg)
        version = data_version(Path(cfg.data.path), cfg.data.pinned, cfg.data.remote)
        mlflow.set_tags(version)
        mlflow.set_tag("crossfuse.dataset", cfg.data.dataset_name())
        recorded(cfg, "validate", [Path(cfg.data.path)], out_dir,
                 lambda: validate(cfg, Path(cfg.data.path), out_dir))
        report = ValidationReport.read(out_dir)
        log_dataset(cfg, version)
        if report.can_continue:  # else the summary is the error's message
            say(report.summary())
        log_metrics({"validation_rows": report.n_rows, "validation_valid": report.n_valid,
                            "validation_rejected": report.n_rejected})
        mlflow.set_tags(validation_tags(report))
        mlflow.log_artifact(str(out_dir / "report.json"), "validation")
        mlflow.log_artifact(str(out_dir / "rejects.csv"), "validation")
        if (out_dir / "data_docs").is_dir():  # not when the manifest could not be read
            mlflow.log_artifacts(str(out_dir / "data_docs"), "validation/data_docs")
        require_valid(report)
    return run.info.run_id, report


def recorded(cfg: RunConfig, stage: str, inputs: list[Path], out_dir: Path,
             compute: Callable[[], object]) -> bool:
    """Fill ``out_dir`` from the stage's record when its inputs and settings are unchanged
    (:mod:`crossfuse.stage_records`), else by ``compute()``, then keep that as the record.

    Says so and logs ``<stage>.from_record``; returns whether the record was used. The
    inputs are hashed once.
    """
    root = Path(cfg.pipeline.stage_cache_dir) if cfg.pipeline.stage_cache_dir else None
    key = record_key(stage, cfg, inputs) if root else None
    hit = root is not None and restore(root, stage, key, out_dir)
    mlflow.log_param(f"{stage}.from_record", hit)
    if hit:
        say(f"{stage}: inputs and settings unchanged, output restored from its record")
        return True
    compute()
    if root is not None:
        store(root, stage, key, out_dir)
    return False


def log_dataset(cfg: RunConfig, version: dict[str, str], context: str = "training") -> None:
    """The manifest as the run's input dataset; its digest is the DVC md5, else the data's
    content hash, else the manifest's hash (from ``version``, :func:`crossfuse.tracking.data_version`)."""
    import mlflow.data
    import pandas as pd

    from crossfuse.data.manifest import MANIFEST_NAME

    manifest = Path(cfg.data.path) / MANIFEST_NAME
    if not manifest.is_file():
        return
    try:
        frame = pd.read_csv(manifest, dtype=str, keep_default_na=False, on_bad_lines="skip",
                            encoding_errors="replace")
    except (ValueError, pd.errors.ParserError):  # validation's report says why
        return
    digest = (version.get("data.dvc_md5") or version.get("data.content_sha256")
              or version["data.manifest_sha256"])
    mlflow.log_input(mlflow.data.from_pandas(frame, source=str(Path(cfg.data.path).resolve()),
                                             name=cfg.data.dataset_name(), digest=digest[:36],
                                             targets="label" if "label" in frame else None),
                     context=context)


@reported
def run_preprocess(cfg: RunConfig, run_id: str, validation_dir: Path,
                   out_dir: Path) -> PreprocessResult:
    """Preprocess the validated dataset; rows validation rejected are skipped."""
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.data.preprocess import preprocess, preprocess_result

    with stage_run(cfg, run_id, "preprocess"):
        cfg = materialise_data(cfg)
        report = ValidationReport.read(Path(validation_dir))
        recorded(cfg, "preprocess", [Path(cfg.data.path), Path(validation_dir) / "report.json"],
                 Path(out_dir), lambda: preprocess(cfg, Path(cfg.data.path), Path(out_dir),
                                                   rejected_lines=report.rejected_lines))
        result = preprocess_result(Path(out_dir))
        if result.n_samples + report.n_rejected != report.n_rows:  # nothing may be lost
            raise RuntimeError(f"row accounting broke: {report.n_rows} rows in, "
                               f"{result.n_samples} used, {report.n_rejected} rejected")
        say(f"rows in {report.n_rows} = used {result.n_samples} + rejected "
            f"{report.n_rejected} (see validation/rejects.csv)")
        log_metrics({"rows_in": report.n_rows, "rows_used": result.n_samples,
                            "rows_rejected": report.n_rejected})
        log_metrics({f"samples_{k}": v for k, v in result.split_counts.items()})
        mlflow.log_param("num_classes", len(result.labels))
    return result


@reported
def run_extract(cfg: RunConfig, run_id: str, preprocessed: Path, out_dir: Path,
                part: tuple[int, int] | None = None) -> ExtractResult:
    """Encode the preprocessed samples (feature cache first); ``part`` = one pod's share.

    A part logs nothing to MLflow: :func:`run_merge_features` logs the totals once. The only
    part of one (``(0, 1)``) is the whole extraction: it logs as ``extract``, no merge follows.
    """
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.features.extract import extract

    part = None if part == (0, 1) else part
    with stage_run(cfg, run_id, "extract" if part is None else f"extract-{part[0]}"):
        result = extract(cfg, Path(preprocessed), Path(out_dir), part=part)
        where = "" if part is None else f"part {part[0] + 1}/{part[1]}, "
        for line in extract_lines(result):
            say(f"{where}{line}")
        if part is None:
            log_extract_result(result)
            say(feature_set_line(result, 1))
    return result


@reported
def run_merge_features(cfg: RunConfig, run_id: str, parts: list[Path],
                       out_dir: Path) -> ExtractResult:
    """Join the parts of a sharded extraction into the run's feature set."""
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.features.extract import merge_features

    with stage_run(cfg, run_id, "extract"):
        result = merge_features(cfg, [Path(p) for p in parts], Path(out_dir))
        mlflow.log_param("extract.parts", len(parts))
        log_extract_result(result)
        say(feature_set_line(result, len(parts)))
    return result


def feature_set_line(result: ExtractResult, parts: int) -> str:
    """The run's feature set in one line.

    >>> from crossfuse.features.extract import ExtractResult
    >>> feature_set_line(ExtractResult(720, {"text": 384}, {}, {}), 2)
    'feature set: 720 rows, text 384-d (2 parts merged)'
    """
    return (f"feature set: {result.n_samples} rows, "
            + ", ".join(f"{m} {d}-d" for m, d in result.dims.items())
            + (f" ({parts} parts merged)" if parts > 1 else ""))


def extract_lines(result: ExtractResult) -> list[str]:
    """Where each modality's vectors came from, in words; the rows add up. ``encoded`` counts
    distinct items (rows with the same content are encoded once).

    >>> from crossfuse.features.extract import ExtractResult
    >>> extract_lines(ExtractResult(720, {"text": 384}, {"text": 0}, {"text": 580},
    ...                             runtime={"text": "torch on cpu"}, seconds={"text": 1.4},
    ...                             present={"text": 600}))  # doctest: +NORMALIZE_WHITESPACE
    ['text: 720 rows = 0 from the feature cache + 600 encoded now (580 distinct; torch on cpu,
      414/s) + 120 without text']
    """
    lines = []
    for m in result.dims:
        hits, distinct = result.cache_hits[m], result.encoded[m]
        have = result.present.get(m, hits + distinct)  # older results: no missing count
        fresh = have - hits
        runtime = result.runtime.get(m, "")
        if distinct and result.seconds.get(m):
            runtime += f"{', ' if runtime else ''}{distinct / result.seconds[m]:.0f}/s"
        copies = f"{distinct} distinct" if distinct != fresh else ""
        how = "; ".join(part for part in (copies, runtime) if part)
        missing = result.n_samples - have
        lines.append(f"{m}: {result.n_samples} rows = {hits} from the feature cache + {fresh} "
                     f"encoded now{f' ({how})' if how else ''}"
                     + (f" + {missing} without {m}" if missing else ""))
        if result.truncated.get(m):
            lines.append(f"{m}: {result.truncated[m]} of {have} items were longer than the "
                         f"encoder's input and were truncated")
    return lines


def log_extract_result(result: ExtractResult) -> None:
    """Log cache hits, encodings, rates and truncations per modality to the MLflow run."""
    for m in result.dims:
        log_metrics({f"features_{m}_cache_hits": result.cache_hits[m],
                     f"features_{m}_encoded": result.encoded[m]})
        if result.encoded[m] and result.seconds.get(m):
            log_metrics({f"features_{m}_items_per_s": result.encoded[m] / result.seconds[m]})
        mlflow.log_param(f"features.{m}.dim", result.dims[m])
        if result.runtime.get(m):
            mlflow.log_param(f"features.{m}.runtime", result.runtime[m])
    for m, n in result.truncated.items():
        log_metrics({f"features_{m}_truncated": n})


@reported
def run_train(cfg: RunConfig, run_id: str, features: Path, model_dir: Path,
              preprocessed: Path | None = None) -> TrainResult:
    """Train the fused model, logging per-epoch curves; writes the model folder.

    ``preprocessed`` (the items) is read only when ``fusion.finetune`` adapts the encoders.
    """
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.training.train import SELECTION_FILE, train

    model_dir = Path(model_dir)

    def log_trial(number: int, params: dict, value: float) -> None:
        with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True):
            mlflow.log_params({"fusion.method": cfg.fusion.method, **params})
            log_metrics({"val_macro_f1": value})

    def log_candidate(candidate: Candidate) -> None:
        # A nested run spanning the candidate's real fit time (it is logged once it is done).
        now_ms = int(time.time() * 1000)
        parent = mlflow.active_run()
        created = mlflow.tracking.MlflowClient().create_run(
            parent.info.experiment_id, start_time=now_ms - int(candidate.seconds * 1000),
            run_name=f"candidate-{candidate.name.replace(':', '-')}",
            tags={"mlflow.parentRunId": parent.info.run_id})
        with mlflow.start_run(run_id=created.info.run_id, nested=True):
            mlflow.log_params({"candidate": candidate.name, "kind": candidate.kind,
                               "modalities": "+".join(candidate.modalities),
                               "settings_tried": candidate.tried,
                               **({"members": json.dumps(candidate.members)}
                                  if candidate.members else {}),
                               **({f"searched.{k}": v for k, v in candidate.searched.items()})})
            log_metrics({"cv_macro_f1_mean": candidate.mean, "cv_macro_f1_std": candidate.std,
                         "fit_seconds": candidate.seconds})
            for fold, score in enumerate(candidate.fold_scores):
                log_metrics({"cv_macro_f1": score}, step=fold)
        mlflow.tracking.MlflowClient().set_terminated(created.info.run_id, end_time=now_ms)

    with stage_run(cfg, run_id, "train"):
        result = train(cfg, Path(features), model_dir,
                       on_epoch=lambda epoch, m: log_metrics(m, step=epoch),
                       on_trial=log_trial, on_candidate=log_candidate, on_progress=say,
                       preprocessed=preprocessed)
        selection = model_dir / SELECTION_FILE
        if selection.is_file():
            chosen = json.loads(selection.read_text())
            mlflow.log_param("auto.winner", chosen["winner"])
            mlflow.set_tag("crossfuse.model_choice", chosen["verdict"])
            mlflow.log_artifact(str(selection), "train")
            log_metrics({"selection_seconds": chosen["seconds"],
                         "selection_resumed_candidates": chosen.get("resumed_candidates", 0)})
            if chosen.get("resumed_candidates"):
                say(f"auto: {chosen['resumed_candidates']} candidates taken from the checkpoints "
                    f"of an interrupted run, the rest fitted now")
            say(leaderboard(chosen))
            say(f"model choice ({chosen['folds']}-fold CV over {chosen['rows']} train+val rows, "
                f"T={chosen['temperature']:.2f} fitted on {chosen['calibration_rows']} held-out "
                f"calibration rows): {chosen['verdict']}")
        if result.searched:
            mlflow.log_params({f"search.best.{k}": v for k, v in result.searched.items()})
        log_metrics({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                            "best_val_macro_f1": result.best_val_macro_f1,
                            "temperature": result.temperature})
    return result


def leaderboard(selection: dict) -> str:
    """The candidates of ``selection.json``, best first: CV macro-F1 and fit seconds; then
    those the race screened out.

    >>> print(leaderboard({"ranked": [{"candidate": "gmu", "cv_macro_f1_mean": 0.9,
    ...     "cv_macro_f1_std": 0.01, "fit_seconds": 3.25}], "seconds": 4.0,
    ...     "screened_out": [{"candidate": "mfb", "tuning_macro_f1": 0.71, "threshold": 0.85,
    ...                       "fit_seconds": 1.5}]}))
      1. gmu                     CV macro-F1 0.9000 ± 0.0100    3.2 s
      -  mfb                     screened out: 0.7100 < 0.8500 on the tuning fold    1.5 s
      (choice took 4.0 s)
    """
    lines = [f"  {i}. {r['candidate']:22s}  CV macro-F1 {r['cv_macro_f1_mean']:.4f} ± "
             f"{r['cv_macro_f1_std']:.4f} {r.get('fit_seconds', 0.0):6.1f} s"
             for i, r in enumerate(selection["ranked"], 1)]
    lines += [f"  -  {r['candidate']:22s}  screened out: {r['tuning_macro_f1']:.4f} < "
              f"{r['threshold']:.4f} on the tuning fold {r['fit_seconds']:6.1f} s"
              for r in selection.get("screened_out", [])]
    return "\n".join([*lines, f"  (choice took {selection['seconds']:.1f} s)"])


EVALUATION_ARTIFACTS = ("report.html", "confusion_matrix.png", "reliability_diagram.png",
                        "modality_subsets.png", "modality_subsets.csv", "robustness.png",
                        "robustness.csv", "importance.png", "importance.csv", "efficiency.json",
                        "classification_report.json", "metrics.json", "predictions.parquet",
                        "model_choice.csv", "model_choice.json", "fused_vs_single.png",
                        "training_curves.png", "misclassified.json", "request_example.json",
                        "data.json")


@reported
def run_evaluate(cfg: RunConfig, run_id: str, features: Path, model_dir: Path,
                 out_dir: Path, preprocessed: Path | None = None) -> EvaluationResult:
    """Test metrics, calibration, robustness, importance, efficiency; the report, logged to the run."""
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    from crossfuse.evaluation.evaluate import evaluate
    from crossfuse.evaluation.report import headline

    out_dir = Path(out_dir)
    with stage_run(cfg, run_id, "evaluate") as run:
        context = {"run_id": run.info.run_id, **{k: v for k, v in run.data.tags.items()
                                                  if k in ("git.commit", "data.dvc_md5")}}
        result = evaluate(cfg, Path(features), Path(model_dir), out_dir,
                          preprocessed=preprocessed, context=context,
                          data_warnings=warnings_from_tags(run.data.tags),
                          intake={k: v for k, v in run_metrics(run).items()
                                  if k in ("rows_in", "rows_used", "rows_rejected")})
        log_metrics(result.metrics)
        say(headline(result.metrics))
        per_target = sorted(out_dir.glob("*_matrix_*.png")) + sorted(out_dir.glob("*_report_*.json"))
        for path in [out_dir / name for name in EVALUATION_ARTIFACTS] + per_target:
            if path.is_file():  # e.g. the subset matrix needs two or more modalities
                mlflow.log_artifact(str(path), "evaluation")
    return result


def request_example(evaluation_dir: Path) -> dict | None:
    """The evaluate stage's one-row client request (``request_example.json``), if it wrote one."""
    from crossfuse.evaluation.examples import REQUEST_EXAMPLE_FILE

    path = Path(evaluation_dir) / REQUEST_EXAMPLE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@reported
def run_register(cfg: RunConfig, run_id: str, model_dir: Path,
                 evaluation_dir: Path) -> RegisterResult:
    """Register the model through the promotion gate; adds the decision to the report; finishes the run."""
    cfg = attach(cfg)  # run state on storage.root (crossfuse.storage)
    import pandas as pd

    from crossfuse.evaluation.report import REPORT_FILE, render_report, run_description
    from crossfuse.registry.promotion import data_hold
    from crossfuse.registry.register import describe, register
    from crossfuse.registry.serving_profile import (
        PROFILE_FILE,
        SERVING_INPUTS_FILE,
        profile_metrics,
        served_line,
    )

    evaluation_dir = Path(evaluation_dir)
    metrics = json.loads((evaluation_dir / "metrics.json").read_text())
    with stage_run(cfg, run_id, "register", final=True) as run:
        predictions = evaluation_dir / "predictions.parquet"
        data_tags = {k: v for k, v in run.data.tags.items() if k.startswith("crossfuse.validation.")}
        requests = evaluation_dir / SERVING_INPUTS_FILE
        result = register(cfg.registry, cfg.model_name(), Path(model_dir), metrics, run_id,
                          pd.read_parquet(predictions) if predictions.is_file() else None,
                          data_tags=data_tags, input_example=request_example(evaluation_dir),
                          hold=data_hold(data_tags, cfg.validation.allow_class_loss),
                          serving_inputs=pd.read_parquet(requests) if requests.is_file() else None,
                          profile_cache=(Path(cfg.pipeline.stage_cache_dir)
                                         if cfg.pipeline.stage_cache_dir else None))
        if result.serving:
            mlflow.log_metrics(profile_metrics(result.serving))
            mlflow.log_dict(result.serving, f"evaluation/{PROFILE_FILE}")
            say(f"served model: {served_line(result.serving)}")
        mlflow.set_tags({"crossfuse.model_version": result.version,
                         "crossfuse.champion_version": result.champion_version})
        decision = asdict(result) | {"decision": "promoted" if result.promoted else "not promoted"}
        mlflow.log_dict(decision, "registration.json")
        about = run.data.tags.get("mlflow.note.content", "")  # what the pipeline ran
        describe(result, run_description(metrics, decision,
                                         run.data.tags.get("crossfuse.model_choice", ""))
                 + (f"\n\n{about}" if about else ""))
        if (evaluation_dir / REPORT_FILE).is_file():  # the report again, now with the decision
            with tempfile.TemporaryDirectory() as tmp:  # the evaluation folder may be read-only
                report = render_report(evaluation_dir, {"model": f"{result.model_name} "
                                                                 f"v{result.version}"},
                                       decision, out=Path(tmp) / REPORT_FILE)
                mlflow.log_artifact(str(report), "evaluation")
        say(f"registered {result.model_name} v{result.version}: {result.reason}")
    return result


def run_in_process(cfg: RunConfig, root: Path) -> tuple[str, RegisterResult]:
    """Every stage in this one process, chained as the pipeline chains them, with outputs in
    ``root/{validation,pre,features,model,evaluation}``; returns (run id, the registration).

    The reference for the KFP runner's overhead (``crossfuse bench stages``) and the way
    tests run the whole chain without KFP.
    """
    root = Path(root)
    run_id, _ = run_validate(cfg, None, root / "validation")
    run_preprocess(cfg, run_id, root / "validation", root / "pre")
    run_extract(cfg, run_id, root / "pre", root / "features")
    run_train(cfg, run_id, root / "features", root / "model", root / "pre")
    run_evaluate(cfg, run_id, root / "features", root / "model", root / "evaluation", root / "pre")
    return run_id, run_register(cfg, run_id, root / "model", root / "evaluation")
