"""The installed ``crossfuse`` command: the library's commands plus run, compile and submit.

The commands that drive Kubeflow Pipelines live here, above the library, so that
``crossfuse/`` never imports KFP or this package (see ``crossfuse.cli`` for the rest)::

    crossfuse run [--data PATH] [--config FILE] [--set key=value ...]   # the whole pipeline, locally
    crossfuse predict --data DIR [--model NAME@ALIAS] [--out FILE]     # score a batch, check drift
    crossfuse compile [--out pipelines/compiled/multimodal_fusion.yaml] # KFP IR YAML (both DAGs)
    crossfuse submit --host URL [--namespace NS] [--config FILE]       # run on a KFP cluster

Example
-------
>>> main(["config", "--set", "fusion.method=late"])    # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from crossfuse import cli
from crossfuse.config import RunConfig, load_config
from crossfuse.data.dvc import materialise_data, pin_data_version
from crossfuse.data.manifest import load_run_manifest, require_dataset_folder
from crossfuse.errors import UserError
from crossfuse.preflight import preflight, require_store
from pipelines.console import QuietConsole

log = logging.getLogger("crossfuse")


def cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    cfg = pin_data_version(cli.config_from_args(args)).resolved()
    preflight(cfg)  # fail fast on an unreachable MLflow, a missing encoder, an unwritable folder
    cfg = materialise_data(cfg)  # with data.remote: pull the pinned version once, here
    load_run_manifest(cfg)  # ... and on a wrong --data or missing columns
    outputs, log_path = run_quietly(cfg, "run", f"(fusion={cfg.fusion.method})", args.verbose,
                                    "no registry alias moved")
    if outputs is None:
        return 1
    print_run_summary(cfg, outputs, log_path, started)
    return 0


def run_quietly(cfg: RunConfig, command: str, what: str, verbose: bool, on_failure: str,
                batch: bool = False) -> tuple[dict | None, Path]:
    """Run a DAG locally with the quiet console and its log file; (the outputs, or None when a
    stage failed on a bug — said on stderr with its traceback above — and the log's path).

    Raises :class:`~crossfuse.errors.UserError` with the stage's own message when a stage
    stopped on a problem the user can fix.
    """
    from pipelines.runner import run_local, run_stamp  # KFP's import is slow: only where it runs

    stamp = run_stamp()
    log_path = Path(cfg.pipeline.pipeline_root) / "logs" / f"{command}-{stamp}.log"
    print(f"crossfuse {command}: {cfg.data.path} {what}, MLflow at {cfg.mlflow.tracking_uri}; "
          f"full log: {log_path}", flush=True)
    console = QuietConsole(log_path, verbose=verbose)
    try:
        with console:
            return run_local(cfg, stamp, batch=batch), log_path
    except RuntimeError:
        after = f"the MLflow run is marked FAILED and {on_failure}; full log: {log_path}"
        if console.user_errors:
            raise UserError("\n".join([*console.user_errors, f"({after})"])) from None
        print(f"\ncrossfuse {command}: {', '.join(console.failed) or 'a stage'} failed on a bug "
              f"in crossfuse, not on your data or settings: please report it with the traceback "
              f"above; {after}.", file=sys.stderr)
        return None, log_path


def print_run_summary(cfg: RunConfig, outputs: dict, log_path: Path | None = None,
                      started: float | None = None) -> None:
    """Print the result in words (test macro-F1 with its interval beside the best single
    modality, the model choice, whether the version was promoted), where the report is,
    the run's link in the MLflow UI and the total time; log the run's log file to the run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from crossfuse.evaluation.report import decision_words, headline
    from crossfuse.tracking import run_metrics

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    name = cfg.model_name()
    version = str(outputs.get("version", ""))
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    metrics = run_metrics(run)
    if log_path is not None and log_path.is_file():
        client.log_artifact(mv.run_id, str(log_path), "logs")
    rows = int(metrics.get("test_samples", 0))
    print(f"\nresult on {rows} test rows: {headline(metrics)}")
    if "crossfuse.model_choice" in run.data.tags:
        print(f"model choice: {run.data.tags['crossfuse.model_choice']}")
    print(decision_words({"model_name": name, "version": version,
                          "promoted": outputs.get("promoted"),
                          "champion_version": outputs.get("champion_version"),
                          "reason": mv.tags.get("crossfuse.reason", "")}))
    print(f"report: {report_location(run.info.artifact_uri)}")
    print(f"review: {ui_url(cfg.mlflow.tracking_uri, run.info.experiment_id, mv.run_id)}")
    if started is not None:
        print(f"done in {duration_words(time.monotonic() - started)}")


def duration_words(seconds: float) -> str:
    """``'4 min 36 s'``, ``'52 s'``.

    >>> duration_words(276.4), duration_words(52.2)
    ('4 min 36 s', '52 s')
    """
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def report_location(artifact_uri: str) -> str:
    """The report's local path when artifacts are on this disk, else its artifact URI.

    >>> report_location("file:///work/mlartifacts/1/abc/artifacts")
    '/work/mlartifacts/1/abc/artifacts/evaluation/report.html'
    """
    uri = f"{artifact_uri.rstrip('/')}/evaluation/report.html"
    return uri[len("file://"):] if uri.startswith("file://") else uri


def ui_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page: on the tracking server itself, or under ``crossfuse ui`` for a local
    store (``make ui`` for the working directory's ``mlflow.db``).

    ``workflowType=machine_learning`` opens MLflow 3's UI on training runs; without it the
    UI remembers the browser's last mode, GenAI (traces) by default.

    >>> ui_url(f"sqlite:///{Path.cwd() / 'mlflow.db'}", "1", "abc")
    '`make ui`, then http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning'
    >>> ui_url("sqlite:////data/m.db", "1", "abc")  # doctest: +NORMALIZE_WHITESPACE
    '`crossfuse ui --set mlflow.tracking_uri=sqlite:////data/m.db`, then
    http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning'
    """
    page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    default = tracking_uri in ("sqlite:///mlflow.db", f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    start = "`make ui`" if default else f"`crossfuse ui --set mlflow.tracking_uri={tracking_uri}`"
    return f"{start}, then http://127.0.0.1:{UI_PORT}/{page}"


UI_PORT = 5000


def latest_run(tracking_uri: str, experiment: str | None = None):
    """The most recent training pipeline run in the store (of ``experiment`` if named), or
    None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = ([client.get_experiment_by_name(experiment)] if experiment
                   else client.search_experiments())
    ids = [e.experiment_id for e in experiments if e is not None]
    if not ids:
        return None
    from crossfuse.tracking import PIPELINE_SOURCE

    runs = client.search_runs(ids, f"tags.`mlflow.source.name` = '{PIPELINE_SOURCE}'",
                              max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    cfg = cli.config_from_args(args).resolved()
    uri = cfg.mlflow.tracking_uri
    require_store(uri)
    run = latest_run(uri, args.experiment)
    page = (f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            f"?workflowType=machine_learning" if run else "#/?workflowType=machine_learning")
    if uri.startswith(("http://", "https://")):
        print(f"latest run: {uri.rstrip('/')}/{page}")
        return 0
    base = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI for {uri} at {base}; the latest run: {base}/{page}" if run else
          f"MLflow UI for {uri} at {base} (no pipeline run in this store yet)", flush=True)
    if args.print_url:
        return 0
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    return subprocess.call([str(mlflow_cli) if mlflow_cli.is_file() else "mlflow", "ui",
                            "--backend-store-uri", uri, "--host", "127.0.0.1",
                            "--port", str(args.port)])


DRIFT_EXIT = 3  # `crossfuse predict --fail-on-drift` when a drift figure crossed its threshold


def cmd_predict(args: argparse.Namespace) -> int:
    import json
    import shutil

    started = time.monotonic()

    from crossfuse.batch.model import default_model_spec  # torch and MLflow: only where it runs

    # The model defaults to the config's own (named after its training data, not --data's).
    trained = cli.config_from_args(argparse.Namespace(config=args.config, set=args.set, data=None))
    model = args.model or default_model_spec(trained)
    cfg = cli.config_from_args(args)
    cfg = cfg.model_copy(update={"predict": cfg.predict.model_copy(update={
        "model": model, "fail_on_drift": cfg.predict.fail_on_drift or args.fail_on_drift})}
                         ).resolved()
    predict_preflight(cfg, model)
    outputs, log_path = run_quietly(cfg, "predict", f"with {model}", args.verbose,
                                    "no predictions were written", batch=True)
    if outputs is None:
        return 1
    result = json.loads(outputs["result"])
    predictions = Path(result["predictions"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        predictions = Path(shutil.copyfile(predictions, args.out))
    print_batch_summary(cfg, result, predictions, log_path)
    print(f"done in {duration_words(time.monotonic() - started)}")
    if cfg.predict.fail_on_drift and result["flagged"]:
        print(f"drift found: exiting {DRIFT_EXIT} (--fail-on-drift)", file=sys.stderr)
        return DRIFT_EXIT
    if cfg.predict.fail_on_drift and cfg.drift.require_embeddings and not result["drift_checked"]:
        print(f"drift not checked in full: exiting {DRIFT_EXIT} (--fail-on-drift; "
              f"--set drift.require_embeddings=false accepts a check without the embeddings)",
              file=sys.stderr)
        return DRIFT_EXIT
    return 0


def predict_preflight(cfg: RunConfig, model: str) -> None:
    """What would stop ``crossfuse predict``, before any work: the data folder and its
    manifest, an existing tracking store (never a new, empty one), the model, the rest of
    :func:`crossfuse.preflight.preflight`."""
    import mlflow

    from crossfuse.batch.model import resolve_model

    require_dataset_folder(Path(cfg.data.path))
    require_store(cfg.mlflow.tracking_uri)
    preflight(cfg)
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    resolve_model(model, cfg.model_name())


def print_batch_summary(cfg: RunConfig, result: dict, predictions: Path,
                        log_path: Path | None = None) -> None:
    """Where the predictions and the report are, the drift verdict and the run's URL."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    if log_path is not None and log_path.is_file():
        client.log_artifact(result["run_id"], str(log_path), "logs")
    print(f"\nMLflow run {result['run_id']} ({cfg.mlflow.tracking_uri})")
    print(f"{result['rows_scored']} of {result['rows_in']} rows scored with {result['model']} "
          f"v{result['version']}, {result['rows_rejected']} rejected")
    if result["flagged"]:
        print("drift: " + "; ".join(result["flagged"]))
    elif not result["drift_checked"]:
        print(f"drift: not checked ({run.data.tags.get('crossfuse.drift.reasons', '')})")
    else:
        print("drift: none")
    print(f"predictions: {predictions}")
    print(f"report: {result['report']}")
    print(f"review: {ui_url(cfg.mlflow.tracking_uri, run.info.experiment_id, result['run_id'])}")


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.runner import compile_pipeline

    # Only an explicit config changes the IR: without one it is the golden file's defaults.
    cfg = load_config(args.config, list(args.set or [])) if (args.config or args.set) else None
    print(f"wrote {compile_pipeline(Path(args.out), cfg)}")
    print(f"wrote {compile_pipeline(Path(args.batch_out), cfg, batch=True)}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit

    cfg = cli.config_from_args(args)
    if args.model:
        cfg = cfg.model_copy(update={"predict": cfg.predict.model_copy(update={"model": args.model})})
    result = submit(cfg, args.host, namespace=args.namespace, experiment=args.experiment,
                    wait_seconds=args.wait, batch=args.batch)
    print(f"submitted run {result['run_id']}: {result['url']}")
    if "state" in result:
        print(f"run {result['run_id']} ended: {result['state']}")
        return 0 if result["state"] == "SUCCEEDED" else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every ``crossfuse`` command: run, compile, submit and the library's."""
    parser, sub = cli.new_parser()
    run = sub.add_parser("run", help="run the whole pipeline locally (KFP local runner)")
    run.add_argument("--data", help="dataset folder with manifest.csv (default: config's data.path)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="show every step's whole output (default: stages and results; the rest "
                          "goes to the run's log file)")
    cli.add_config_args(run)
    run.set_defaults(func=cmd_run)

    pred = sub.add_parser("predict", help="score a folder of data with a registered model and "
                                          "check it for drift (KFP local runner)")
    pred.add_argument("--data", required=True, help="folder with manifest.csv (label optional)")
    pred.add_argument("--model", help="NAME@ALIAS or NAME/VERSION (default: predict.model, else "
                                      "the config's model @champion)")
    pred.add_argument("--out", help="also copy predictions.parquet here")
    pred.add_argument("--fail-on-drift", action="store_true",
                      help=f"exit {DRIFT_EXIT} when a drift figure crosses its threshold")
    pred.add_argument("-v", "--verbose", action="store_true", help="show every step's output")
    cli.add_config_args(pred)
    pred.set_defaults(func=cmd_predict)

    comp = sub.add_parser("compile", help="compile the pipelines to KFP IR YAML")
    comp.add_argument("--out", default="pipelines/compiled/multimodal_fusion.yaml")
    comp.add_argument("--batch-out", default="pipelines/compiled/batch_predict.yaml")
    cli.add_config_args(comp)
    comp.set_defaults(func=cmd_compile)

    sub_run = sub.add_parser("submit", help="compile and submit the pipeline to a KFP cluster")
    sub_run.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://kfp:8080")
    sub_run.add_argument("--namespace", help="Kubernetes namespace (multi-user KFP)")
    sub_run.add_argument("--experiment", help="KFP experiment (default: crossfuse-<dataset>)")
    sub_run.add_argument("--data", help="dataset path as the cluster's steps see it")
    sub_run.add_argument("--wait", type=int, default=0, metavar="SECONDS",
                         help="wait for the run to end; exit 1 unless it SUCCEEDED")
    sub_run.add_argument("--batch", action="store_true",
                         help="submit the batch prediction pipeline (scores --data with --model)")
    sub_run.add_argument("--model", help="with --batch: NAME@ALIAS or NAME/VERSION "
                                         "(default: predict.model, else the config's @champion)")
    cli.add_config_args(sub_run)
    sub_run.set_defaults(func=cmd_submit)

    ui = sub.add_parser("ui", help="the MLflow UI on this store, opened at the latest run")
    ui.add_argument("--port", type=int, default=UI_PORT)
    ui.add_argument("--experiment", help="the latest run of this experiment (default: any)")
    ui.add_argument("--print-url", action="store_true", help="print the link; start no server")
    cli.add_config_args(ui)
    ui.set_defaults(func=cmd_ui)

    cli.add_library_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
