"""Run the pipeline locally with KFP's SubprocessRunner, or compile it to IR YAML.

Locally every component runs as a subprocess of the current Python environment
(``use_venv=False``), with outputs under ``pipeline.pipeline_root/<run stamp>/``.

Example
-------
>>> outputs = run_local(load_config("configs/default.yaml"))      # doctest: +SKIP
>>> outputs["version"], outputs["champion_version"]               # doctest: +SKIP
('2', '1')
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from kfp import compiler, local

from crossfuse.config import RunConfig, StageResources
from crossfuse.tracking import registration_of
from pipelines.batch_predict import build_batch_pipeline
from pipelines.multimodal_fusion import build_pipeline

COMPILED = Path(__file__).parent / "compiled" / "multimodal_fusion.yaml"
COMPILED_BATCH = Path(__file__).parent / "compiled" / "batch_predict.yaml"


def run_stamp() -> str:
    """A name for one local run, unique among runs started at once: its start time and pid.

    >>> import re; bool(re.fullmatch(r"\\d{8}-\\d{6}-\\d+", run_stamp()))
    True
    """
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def run_local(cfg: RunConfig, stamp: str | None = None, batch: bool = False) -> dict:
    """Run the whole DAG locally; returns the registration ({version, champion_version,
    promoted}, read from the run's MLflow run), or with ``batch`` the score task's outputs.

    Step outputs go to ``pipeline.pipeline_root/<stamp>/`` (default :func:`run_stamp`): KFP
    names a local run's folder by its start time, and two runs started in the same clock
    tick (seen on this machine) would otherwise share one folder and read each other's
    outputs. Raises RuntimeError (from KFP) when a stage fails; the failing stage's log,
    e.g. the validation summary, is printed above it.
    """
    cfg = cfg.resolved()
    root = Path(cfg.pipeline.pipeline_root) / (stamp or run_stamp())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    steps = for_local_runner(cfg)
    if batch:
        with output_restored():
            task = build_batch_pipeline(steps)(config_json=cfg.to_json())
        return dict(task.outputs)
    token = uuid.uuid4().hex
    with output_restored():
        build_pipeline(steps)(config_json=cfg.to_json(), run_token=token)
    return registration_of(cfg, token)


def for_local_runner(cfg: RunConfig) -> RunConfig:
    """``cfg`` less the steps' Kubernetes-only settings (CPU, memory, accelerators, placement),
    which the local runner ignores; retries stay. Each such setter costs KFP a walk of the
    call stack (``inspect.stack()``, seconds in all under a process that has torch and MLflow
    loaded) and a warning in the log.

    >>> cfg = RunConfig.model_validate({"pipeline": {"resources": {"train": {
    ...     "cpu_request": "2", "retries": 1}}}})
    >>> local = for_local_runner(cfg).pipeline.resources["train"]
    >>> local.cpu_request, local.retries
    (None, 1)
    """
    keep = {"retries", "retry_backoff_seconds"}
    resources = {name: StageResources(**{k: v for k, v in res.model_dump().items() if k in keep})
                 for name, res in cfg.pipeline.resources.items()}
    return cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(
        update={"resources": resources})})


@contextlib.contextmanager
def output_restored() -> Iterator[None]:
    """Put ``builtins.print`` and the root logger's handlers and level back as they were,
    whatever KFP's local runner did to them.

    For each task KFP swaps ``builtins.print`` for an indenting one
    (``kfp.local.logging_utils.indented_print``) and the root logger's handlers for one on
    the ``sys.stdout`` of that moment (``local_logger_context``). The tasks of a
    ``dsl.ParallelFor`` run in threads, and when two swaps interleave, the last restore puts
    back the other task's: every later ``print`` starts with four spaces, and every later log
    record goes to a stream that may be closed by then ("--- Logging error ---").

    >>> with output_restored():
    ...     builtins.print = lambda *a, **k: None
    >>> print("back")
    back
    """
    root = logging.getLogger()
    saved = builtins.print, root.handlers[:], root.level
    try:
        yield
    finally:
        builtins.print = saved[0]
        root.handlers[:] = saved[1]
        root.setLevel(saved[2])


def compile_pipeline(path: Path = COMPILED, cfg: RunConfig | None = None,
                     batch: bool = False) -> Path:
    """Write the pipeline's IR YAML (what a KFP cluster runs) to ``path``; ``batch``: the batch
    prediction pipeline's.

    ``cfg`` sets the steps' resources and the default ``config_json``; None = defaults.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile((build_batch_pipeline if batch else build_pipeline)(cfg), str(path))
    return path
