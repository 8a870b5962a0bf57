"""MLflow plumbing: one pipeline run is one MLflow run, resumed by each stage.

The first stage creates the run and hands its id on; every later stage reopens it
with :func:`stage_run`. A stage that raises marks the run FAILED (with the error
as a tag); the last stage marks it FINISHED.

Example
-------
>>> with stage_run(cfg, run_id=None, stage="validate") as run:   # doctest: +SKIP
...     mlflow.log_metric("rows", 720)
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from crossfuse.config import RunConfig, config_summary
from crossfuse.data.manifest import MANIFEST_NAME
from crossfuse.hashing import content_hash
from crossfuse.run_status import ERROR_TAG, FAILED_TAG, TERMINAL_FAILURES, end_stage, heartbeat


@contextlib.contextmanager
def sqlite_store_lock(uri: str) -> Iterator[None]:
    """Hold an inter-process lock next to a SQLite tracking store (no-op for other stores).

    MLflow creates a new SQLite store's tables on first use; two runs starting at once
    would both try ("table spans already exists"). The lock makes the first use, and
    experiment creation, one process at a time.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        yield
        return
    lock_path = Path(uri[len(prefix):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def configure(cfg: RunConfig) -> str:
    """Point MLflow at ``cfg.mlflow.tracking_uri`` and make sure the experiment exists.

    The experiment is created with artifacts under ``mlflow.artifact_root``. Safe to
    call from several processes at once. Returns the experiment id.
    """
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    with sqlite_store_lock(cfg.mlflow.tracking_uri):
        return _ensure_experiment(cfg)


def _ensure_experiment(cfg: RunConfig) -> str:
    client = MlflowClient()
    name = cfg.experiment_name()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if not cfg.mlflow.served:
            location = (Path(cfg.mlflow.artifact_root) / name).resolve().as_uri()
        try:
            client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except mlflow.exceptions.MlflowException:
            if client.get_experiment_by_name(name) is None:  # else: created concurrently
                raise
    elif any(exp.tags.get(k) != v for k, v in EXPERIMENT_TAGS.items()):  # made by an older crossfuse
        for key, value in EXPERIMENT_TAGS.items():
            client.set_experiment_tag(exp.experiment_id, key, value)
    return mlflow.set_experiment(name).experiment_id


# A model-training experiment: the UI opens it on its runs, not on GenAI traces.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


PIPELINE_SOURCE = "crossfuse pipeline (pipelines/multimodal_fusion.py)"  # a training run's


def run_tags(cfg: RunConfig) -> dict[str, str]:
    """What a new pipeline run says about itself in the UI: a description and its source."""
    return {"mlflow.note.content": (
                f"crossfuse pipeline on {cfg.data.dataset_name()} ({cfg.data.path}): validate, "
                f"preprocess, extract ({', '.join(f'{m}: {e}' for m, e in cfg.extract.encoders.items())}), "
                f"train (fusion.method={cfg.fusion.method}, seed {cfg.seed}), evaluate, register "
                f"as {cfg.model_name()} through the promotion gate."),
            "mlflow.source.name": PIPELINE_SOURCE,
            "mlflow.source.type": "PROJECT"}


# Metric names in MLflow are "<section>/<name>": the UI draws one collapsible section per
# prefix instead of 77 unsorted charts. Inside crossfuse (metrics.json, the gate, the report)
# names stay flat; :func:`ui_metric_name` and :func:`flat_metric_name` translate.
# (flat prefix, section, the part of the flat name the section replaces); first match wins.
METRIC_SECTIONS = (
    ("test_precision_", "per_class", "test_"), ("test_recall_", "per_class", "test_"),
    ("test_f1_", "per_class", "test_"),
    ("test_ece", "calibration", "test_"), ("test_log_loss_calibrated", "calibration", "test_"),
    ("temperature", "calibration", ""),
    ("test_", "test", "test_"), ("fusion_", "fusion", "fusion_"),
    ("baseline_", "baseline", "baseline_"), ("present_", "missing_modality", "present_"),
    ("robustness_", "robustness", "robustness_"), ("importance_", "importance", "importance_"),
    ("efficiency_", "efficiency", "efficiency_"), ("validation_", "validation", "validation_"),
    ("rows_", "preprocess", ""), ("samples_", "preprocess", ""),
    ("features_", "extract", "features_"),
    ("train_", "train", ""), ("val_", "train", ""), ("best_", "train", ""),
    ("epochs_", "train", ""), ("cv_", "train", ""),
    ("stage_", "performance", "stage_"),
    ("batch_", "batch", "batch_"), ("labelled_", "labelled", "labelled_"),
    ("drift_", "drift", "drift_"), ("selection_", "selection", "selection_"),
    ("calibration_", "calibration", "calibration_"),
)


def ui_metric_name(name: str) -> str:
    """The MLflow name of a crossfuse metric: its section, a slash, the rest.

    >>> ui_metric_name("test_macro_f1"), ui_metric_name("baseline_text_test_macro_f1")
    ('test/macro_f1', 'baseline/text_test_macro_f1')
    >>> ui_metric_name("test_ece_calibrated"), ui_metric_name("val_loss"), ui_metric_name("x")
    ('calibration/ece_calibrated', 'train/val_loss', 'x')
    """
    for prefix, section, replaced in METRIC_SECTIONS:
        if name.startswith(prefix):
            return f"{section}/{name[len(replaced):]}"
    return name


def flat_metric_name(name: str) -> str:
    """Inverse of :func:`ui_metric_name`; a name without a known section is returned as is
    (runs logged before sections existed read the same).

    >>> flat_metric_name("per_class/f1_circle"), flat_metric_name("train/val_loss")
    ('test_f1_circle', 'val_loss')
    """
    section, _, rest = name.partition("/")
    for prefix, candidate, replaced in METRIC_SECTIONS:
        if candidate == section and (replaced + rest).startswith(prefix):
            return replaced + rest
    return name


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """``mlflow.log_metrics`` under the sectioned names (:func:`ui_metric_name`)."""
    mlflow.log_metrics({ui_metric_name(k): v for k, v in metrics.items()}, step=step)


def run_metrics(run) -> dict[str, float]:
    """A run's latest metrics under crossfuse's flat names (``test_macro_f1``...)."""
    return {flat_metric_name(k): v for k, v in run.data.metrics.items()}


def git_commit(path: Path) -> str:
    """The git commit of the repository holding ``path``, or ``unknown`` outside git."""
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> str:
    """The code that ran: the git commit of crossfuse's own checkout, else its installed version.

    It was the commit of the *data's* folder, so a run on data outside the repository
    said "unknown" for the code.
    """
    commit = git_commit(Path(__file__).resolve().parent)
    if commit != "unknown":
        return commit
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"crossfuse {version('crossfuse')} (installed package, not a git checkout)"
    except PackageNotFoundError:
        return "unknown (not a git checkout, not an installed package)"


def data_version(data_path: Path, pinned: dict | None = None,
                 remote: str | None = None) -> dict[str, str]:
    """How to find this exact data again.

    ``data.dvc_md5``: the md5 the run pinned (``pinned``, pulled from ``remote``) or the
    one in ``<folder>.dvc`` next to the dataset; ``data.manifest_sha256``: the manifest's
    hash (any dataset); ``git.commit``: the code (:func:`code_version`).
    """
    data_path = Path(data_path).resolve()
    version = {"data.path": str(data_path), "git.commit": code_version(),
               "data.manifest_sha256": _file_hash(data_path / MANIFEST_NAME)}
    dvc_file = data_path.with_name(data_path.name + ".dvc")
    if pinned:
        version["data.dvc_md5"] = str(pinned.get("md5", "unknown"))
        version["data.dvc_remote"] = str(remote)
    elif dvc_file.is_file():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [{}])
        version["data.dvc_md5"] = str(outs[0].get("md5", "unknown"))
    return version


def _file_hash(path: Path) -> str:
    return content_hash(path.read_bytes()) if path.is_file() else "missing"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    On Linux it is ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives
    ``fork`` + ``exec``, so a KFP task or a benchmark child would report its parent's peak
    when that is higher (seen: a child using 14 MB reported its parent's 813 MB).

    >>> 0 < peak_rss_mb() < 1_000_000
    True
    """
    import resource
    import sys

    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def stage_cost(stage: str, seconds: float) -> dict[str, float]:
    """What a stage cost: its own seconds, its process's seconds since start (imports
    included) and the process's peak resident memory (MB), as ``stage_<stage>_*`` metrics.

    >>> sorted(stage_cost("train", 1.0))
    ['stage_train_peak_rss_mb', 'stage_train_process_seconds', 'stage_train_seconds']
    """
    import psutil

    return {f"stage_{stage}_seconds": round(seconds, 3),
            f"stage_{stage}_process_seconds": round(time.time() - psutil.Process().create_time(), 3),
            f"stage_{stage}_peak_rss_mb": round(peak_rss_mb(), 1)}


@contextlib.contextmanager
def stage_run(cfg: RunConfig, run_id: str | None, stage: str, final: bool = False,
              run_name: str | None = None, tags: dict[str, str] | None = None
              ) -> Iterator[mlflow.ActiveRun]:
    """Open (or, without ``run_id``, create) the pipeline's MLflow run for one stage.

    A new run is named ``run_name`` (default ``<dataset>-<fusion method>``) and tagged
    ``tags`` (default :func:`run_tags`). While the stage runs, a thread stamps
    ``crossfuse.heartbeat`` every ``storage.heartbeat_seconds`` (``crossfuse runs gc`` marks
    a RUNNING run whose stamp is stale KILLED: a task killed by the kernel cannot say so).
    On success the run is left RUNNING, or FINISHED when ``final``; on an exception it is
    marked FAILED with ``crossfuse.failed_stage`` and ``crossfuse.error`` tags. A run that
    another task marked FAILED or KILLED stays so, unless the failed task is this one, retried
    (:func:`crossfuse.run_status.end_stage`).
    """
    configure(cfg)
    if run_id:
        run = mlflow.start_run(run_id=run_id)
    else:
        run = mlflow.start_run(run_name=run_name or f"{cfg.data.dataset_name()}-{cfg.fusion.method}",
                               tags=tags if tags is not None else run_tags(cfg))
        mlflow.log_params(config_summary(cfg))
    started = time.perf_counter()
    with heartbeat(run.info.run_id, cfg.storage.heartbeat_seconds):
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tags({FAILED_TAG: stage,
                             ERROR_TAG: f"{type(exc).__name__}: {exc}"[:5000]})
            mlflow.end_run("FAILED")
            raise
        log_metrics(stage_cost(stage, time.perf_counter() - started))
        mlflow.set_tag(f"crossfuse.stage.{stage}", "done")
    end_stage(run.info.run_id, stage, final)


KFP_RUN_TAG = "crossfuse.kfp_run"  # the KFP run (job id) an MLflow pipeline run belongs to
RUN_TOKEN_TAG = "crossfuse.run_token"  # the name its caller gave the run (crossfuse run)


def runs_tagged(cfg: RunConfig, key: str, value: str) -> list:
    """The runs of ``cfg``'s experiment whose tag ``key`` is ``value`` (none without one)."""
    configure(cfg)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.experiment_name())
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`{key}` = '{value}'")


def registration_of(cfg: RunConfig, run_token: str) -> dict:
    """{version, champion_version, promoted} of the pipeline run its caller named
    ``run_token``, read from its MLflow run (the register stage tags them)."""
    runs = runs_tagged(cfg, RUN_TOKEN_TAG, run_token)
    if len(runs) != 1 or "crossfuse.model_version" not in runs[0].data.tags:
        raise RuntimeError(f"no registered pipeline run tagged {RUN_TOKEN_TAG}={run_token} "
                           f"in {cfg.experiment_name()} ({len(runs)} runs found)")
    tags = runs[0].data.tags
    return {"version": tags["crossfuse.model_version"],
            "champion_version": tags.get("crossfuse.champion_version", ""),
            "promoted": tags.get("crossfuse.decision") == "promoted"}


def close_pipeline_run(cfg: RunConfig, kfp_run: str, state: str, error: str = "") -> list[str]:
    """What the pipeline's exit handler does: when the KFP run did not succeed, mark its MLflow
    run FAILED unless a stage already ended it (a task killed by the kernel, an evicted pod
    or a cancelled run leave it RUNNING otherwise). Returns the ids of the runs it ended."""
    if state == "SUCCEEDED" or not kfp_run:
        return []
    client, ended = MlflowClient(), []
    for run in runs_tagged(cfg, KFP_RUN_TAG, kfp_run):
        if run.info.status in (*TERMINAL_FAILURES, "FINISHED"):
            continue
        stage = run.data.tags.get(FAILED_TAG) or "unknown (the task ended without a word)"
        client.set_tag(run.info.run_id, FAILED_TAG, stage)
        if ERROR_TAG not in run.data.tags:
            client.set_tag(run.info.run_id, ERROR_TAG,
                           f"the KFP run ended {state} ({error or 'a task was killed'}); "
                           f"marked by the pipeline's exit handler"[:5000])
        client.set_terminated(run.info.run_id, "FAILED")
        ended.append(run.info.run_id)
    return ended
