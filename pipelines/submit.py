"""Submit the pipeline to a Kubeflow Pipelines cluster (``make submit KFP_HOST=...``).

The pipeline is compiled with the config's step resources, then sent with kfp's own
client (``kfp.Client(...).create_run_from_pipeline_package``); the run's single
argument is the serialised config. The data version is pinned into that config from
the .dvc file (``data.dvc_file``, default ``data.dvc``): the pods pull exactly that
version from ``data.remote`` through DVC, never from the submitter's disk. The run is
named after the dataset, the fusion method and that md5, so the KFP UI and the MLflow
run point at the same data.

A cluster run needs an MLflow tracking server and a DVC remote its pods can reach:
a SQLite or file tracking URI, or no ``data.remote``, is refused.

Example
-------
>>> submit(load_config("configs/default.yaml", ["data.remote=s3://bucket/crossfuse"]),
...        host="http://kfp.example:8080")  # doctest: +SKIP
{'run_id': '5b0c...', 'url': 'http://kfp.example:8080/#/runs/details/5b0c...'}
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import kfp

from crossfuse.batch.model import default_model_spec, parse_model_spec
from crossfuse.config import RunConfig
from crossfuse.data.dvc import pin_data_version
from crossfuse.errors import UserError
from crossfuse.tracking import data_version
from pipelines.runner import compile_pipeline


def run_name(cfg: RunConfig) -> str:
    """``<dataset>-<method>[-data-<md5[:8]>]``: what the KFP UI lists."""
    md5 = (cfg.data.pinned or {}).get("md5") or data_version(Path(cfg.data.path)).get("data.dvc_md5", "")
    suffix = f"-data-{md5[:8]}" if md5 and md5 != "unknown" else ""
    return f"{cfg.data.dataset_name()}-{cfg.fusion.method}{suffix}"


def submit(cfg: RunConfig, host: str, namespace: str | None = None,
           experiment: str | None = None, wait_seconds: int = 0,
           batch: bool = False) -> dict[str, str]:
    """Compile and submit one run; returns its id, UI address and, when waited for, its state.

    ``wait_seconds`` > 0 polls the run until it ends (``TimeoutError`` past that). ``batch``
    submits the batch prediction pipeline (``predict.model`` scores ``data.path``) instead,
    in the KFP experiment ``<model>-predictions``.
    """
    if not cfg.mlflow.served:
        raise UserError(f"mlflow.tracking_uri={cfg.mlflow.tracking_uri!r} is local to this "
                        f"machine; a cluster run needs a tracking server its pods reach: set "
                        f"MLFLOW_TRACKING_URI=http://<server> (see `make mlflow-server`)")
    if not cfg.data.remote:
        raise UserError("data.remote is not set: cluster pods pull the data version data.dvc pins "
                        "from a DVC remote; `dvc push` the data there and pass "
                        "--set data.remote=s3://<bucket>/<path> (or set it in the config)")
    cfg = pin_data_version(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", cfg, batch=batch)
        client = kfp.Client(host=host, namespace=namespace)
        model = parse_model_spec(default_model_spec(cfg), cfg.model_name())[0]
        result = client.create_run_from_pipeline_package(
            str(package), arguments={"config_json": cfg.to_json()},
            run_name=f"{run_name(cfg)}-predict" if batch else run_name(cfg),
            experiment_name=experiment or (f"{model}-predictions" if batch else cfg.experiment_name()),
            namespace=namespace, enable_caching=cfg.pipeline.caching)
    out = {"run_id": result.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}
    if wait_seconds > 0:
        finished = client.wait_for_run_completion(result.run_id, timeout=wait_seconds,
                                                  sleep_duration=min(30, max(1, wait_seconds // 20)))
        out["state"] = str(finished.state)
    return out
