"""The installed ``crossfuse`` command: the library's commands plus run, compile and submit.

The commands that drive Kubeflow Pipelines live here, above the library, so that
``crossfuse/`` never imports KFP or this package (see ``crossfuse.cli`` for the rest)::

    crossfuse run [--data PATH] [--config FILE] [--set key=value ...]   # the whole pipeline, locally
    crossfuse compile [--out pipelines/compiled/multimodal_fusion.yaml] # KFP IR YAML
    crossfuse submit --host URL [--namespace NS] [--config FILE]       # run on a KFP cluster

Example
-------
>>> main(["config", "--set", "fusion.method=late"])    # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from crossfuse import cli
from crossfuse.config import RunConfig, load_config
from crossfuse.data.dvc import materialise_data, pin_data_version
from crossfuse.data.manifest import load_run_manifest
from crossfuse.preflight import preflight
from pipelines.console import QuietConsole

log = logging.getLogger("crossfuse")


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.runner import run_local, run_stamp  # KFP's import is slow: only where it runs

    cfg = pin_data_version(cli.config_from_args(args)).resolved()
    preflight(cfg)  # fail fast on an unreachable MLflow, a missing encoder, an unwritable folder
    cfg = materialise_data(cfg)  # with data.remote: pull the pinned version once, here
    load_run_manifest(cfg)  # ... and on a wrong --data or missing columns
    stamp = run_stamp()
    log_path = Path(cfg.pipeline.pipeline_root) / "logs" / f"run-{stamp}.log"
    print(f"crossfuse run: {cfg.data.path} (fusion={cfg.fusion.method}), MLflow at "
          f"{cfg.mlflow.tracking_uri}; full log: {log_path}", flush=True)
    try:
        with QuietConsole(log_path, verbose=args.verbose):
            outputs = run_local(cfg, stamp)
    except RuntimeError as exc:
        print(f"\ncrossfuse run failed: {str(exc).splitlines()[0] if str(exc) else exc}\n"
              f"The failing stage's last lines are above (all of it in {log_path}); the MLflow "
              f"run is marked FAILED and no registry alias moved.", file=sys.stderr)
        return 1
    print_run_summary(cfg, outputs, log_path)
    return 0


def print_run_summary(cfg: RunConfig, outputs: dict, log_path: Path | None = None) -> None:
    """Print the registered version, the champion, the headline test metrics, where the report
    is and the run's URL in the MLflow UI; log the run's log file to the run."""
    import mlflow
    from mlflow.tracking import MlflowClient

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
    print(f"\nMLflow run {mv.run_id} ({cfg.mlflow.tracking_uri})")
    for key in sorted(metrics):
        if key.startswith(("test_accuracy", "test_macro_f1", "baseline_", "fusion_gain")):
            print(f"  {key:34s} {metrics[key]:.4f}")
    if "crossfuse.model_choice" in run.data.tags:
        print(f"model choice: {run.data.tags['crossfuse.model_choice']}")
    gain = metrics.get("fusion_gain_macro_f1")
    if gain is not None and gain < 0:
        print(f"fusion did not help on the test split: the best single modality scored "
              f"{-gain:.4f} macro-F1 more than the fused model")
    print(f"model {name} v{version}: {mv.tags.get('crossfuse.reason', '')}")
    champion = outputs.get("champion_version")
    print(f"  champion -> {'v' + str(champion) if champion else 'none yet'}, challenger -> v{version}")
    print(f"report: {report_location(run.info.artifact_uri)}")
    print(f"review: {ui_url(cfg.mlflow.tracking_uri, run.info.experiment_id, mv.run_id)}")


def report_location(artifact_uri: str) -> str:
    """The report's local path when artifacts are on this disk, else its artifact URI.

    >>> report_location("file:///work/mlartifacts/1/abc/artifacts")
    '/work/mlartifacts/1/abc/artifacts/evaluation/report.html'
    """
    uri = f"{artifact_uri.rstrip('/')}/evaluation/report.html"
    return uri[len("file://"):] if uri.startswith("file://") else uri


def ui_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page: on the tracking server itself, or under `make ui` for a local store.

    ``workflowType=machine_learning`` opens MLflow 3's UI on training runs; without it the
    UI remembers the browser's last mode, GenAI (traces) by default.

    >>> ui_url("sqlite:///mlflow.db", "1", "abc")
    '`make ui`, then http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning'
    """
    page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"`make ui`, then http://127.0.0.1:5000/{page}"


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.runner import compile_pipeline

    # Only an explicit config changes the IR: without one it is the golden file's defaults.
    cfg = load_config(args.config, list(args.set or [])) if (args.config or args.set) else None
    print(f"wrote {compile_pipeline(Path(args.out), cfg)}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit

    result = submit(cli.config_from_args(args), args.host, namespace=args.namespace,
                    experiment=args.experiment, wait_seconds=args.wait)
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

    comp = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    comp.add_argument("--out", default="pipelines/compiled/multimodal_fusion.yaml")
    cli.add_config_args(comp)
    comp.set_defaults(func=cmd_compile)

    sub_run = sub.add_parser("submit", help="compile and submit the pipeline to a KFP cluster")
    sub_run.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://kfp:8080")
    sub_run.add_argument("--namespace", help="Kubernetes namespace (multi-user KFP)")
    sub_run.add_argument("--experiment", help="KFP experiment (default: crossfuse-<dataset>)")
    sub_run.add_argument("--data", help="dataset path as the cluster's steps see it")
    sub_run.add_argument("--wait", type=int, default=0, metavar="SECONDS",
                         help="wait for the run to end; exit 1 unless it SUCCEEDED")
    cli.add_config_args(sub_run)
    sub_run.set_defaults(func=cmd_submit)

    cli.add_library_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
