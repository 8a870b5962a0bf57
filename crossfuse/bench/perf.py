"""``crossfuse bench perf``: where a run's time and memory go, written to ``docs/performance.md``.

Three measurements, each a table of the page:

- :func:`extraction_rates`: items per second of the extract stage end to end (read the
  preprocessed files, hash, decode and resize in workers, run the network, write the
  cache) for each backend and device, on an empty feature cache.
- :func:`run_costs`: a cold ``crossfuse run`` (empty caches), a warm one that changes only
  the fusion settings, and the same stage functions called in one process; per stage
  seconds and peak resident memory, read back from the runs' ``performance/`` metrics.
- :func:`scaling`: the same run on generated data at several sizes.

Ratios are measured within one invocation, on one machine, which the page names.

Example
-------
>>> rows = extraction_rates(cfg, Path("pre"), [("cpu", "torch"), ("cpu", "onnxruntime")])  # doctest: +SKIP
>>> rows[0]["items_per_s"]                                                                 # doctest: +SKIP
51.3
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crossfuse.config import RunConfig, load_config

STAGES = ("validate", "preprocess", "extract", "train", "evaluate", "register")


def machine() -> str:
    """The CPU model, its cores and, when torch sees one, the GPU: the label of absolute times."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from crossfuse.encoders.onnx_backend import cpu_threads

    label = f"{cpu}, {cpu_threads()} cores"
    if torch.cuda.is_available():
        label += f", {torch.cuda.get_device_name(0)}"
    return label


def default_setups() -> list[tuple[str, str]]:
    """``(device, backend)`` pairs this machine can run: PyTorch and ONNX Runtime on the CPU,
    PyTorch on the GPU when there is one."""
    import torch

    from crossfuse.encoders.onnx_backend import onnxruntime_available

    setups = [("cpu", "torch")] + ([("cpu", "onnxruntime")] if onnxruntime_available() else [])
    return setups + ([("cuda", "torch")] if torch.cuda.is_available() else [])


def extraction_rates(cfg: RunConfig, preprocessed: Path, setups: list[tuple[str, str]],
                     modalities: list[str] | None = None,
                     extra: dict[str, list[str]] | None = None) -> list[dict]:
    """Items per second of :func:`crossfuse.features.extract.extract`, empty cache each time.

    Each row starts from an empty feature cache and a fresh encoder (its load is timed);
    an ONNX export is made once, before the first row that needs it, and shared.
    ``setups`` are ``(device, backend)`` pairs; ``extra`` names further variants as
    ``{label: [overrides]}`` (e.g. no decode workers), run on the last setup.
    """
    from crossfuse.encoders import EncoderUnavailable, build_encoder, place_encoder
    from crossfuse.features.extract import extract

    modalities = modalities or cfg.modalities
    variants = [(device, backend, "", []) for device, backend in setups]
    variants += [(setups[-1][0], setups[-1][1], label, overrides)
                 for label, overrides in (extra or {}).items()]
    rows = []
    exports = Path(tempfile.mkdtemp(prefix="crossfuse-perf-onnx-"))  # one export, not one per row
    for modality in modalities:  # made before the clock starts: a run reuses its cached export
        if any(backend == "onnxruntime" for _, backend, _, _ in variants):
            with contextlib.suppress(EncoderUnavailable):
                place_encoder(build_encoder(cfg.extract.encoders[modality], modality), "cpu",
                              "onnxruntime", exports)
    for modality in modalities:
        for device, backend, label, overrides in variants:
            with tempfile.TemporaryDirectory(prefix="crossfuse-perf-") as work:
                (Path(work) / "cache").mkdir()
                (Path(work) / "cache" / "onnx").symlink_to(exports, target_is_directory=True)
                run_cfg = cfg.model_copy(deep=True)
                run_cfg.extract.device, run_cfg.extract.backend = device, backend
                run_cfg.extract.cache_dir = str(Path(work) / "cache")
                run_cfg.extract.encoders = {modality: cfg.extract.encoders[modality]}
                run_cfg = _overridden(run_cfg, overrides)
                started = time.perf_counter()
                try:
                    result = extract(run_cfg, preprocessed, Path(work) / "features")
                except EncoderUnavailable:  # this encoder has no such backend: no row
                    continue
                seconds = time.perf_counter() - started
            rows.append({"modality": modality, "encoder": cfg.extract.encoders[modality],
                         "runtime": result.runtime[modality] + (f", {label}" if label else ""),
                         "items": result.encoded[modality], "seconds": round(seconds, 2),
                         "items_per_s": round(result.encoded[modality] / seconds, 1),
                         # without the encoder's load and device set-up
                         "encoding_items_per_s": round(result.encoded[modality]
                                                       / max(result.seconds[modality], 1e-9), 1)})
    shutil.rmtree(exports, ignore_errors=True)
    return rows


def _overridden(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    if not overrides:
        return cfg
    from crossfuse.config import apply_override

    tree = json.loads(cfg.to_json())
    for assignment in overrides:
        apply_override(tree, assignment)
    return RunConfig.model_validate(tree)


def preprocessed_copy(cfg: RunConfig, out: Path) -> Path:
    """Preprocess ``cfg``'s dataset into ``out`` (every row; validation is not repeated here)."""
    from crossfuse.data.preprocess import preprocess

    preprocess(cfg, Path(cfg.data.path), out)
    return out


def crossfuse_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "crossfuse"), *args]


def stage_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The ``stage_*`` metrics (flat names) of one pipeline run."""
    import mlflow

    from crossfuse.tracking import run_metrics

    client = mlflow.tracking.MlflowClient(tracking_uri)
    return {k: v for k, v in run_metrics(client.get_run(run_id)).items() if k.startswith("stage_")}


def timed_run(args: list[str], log: Path) -> float:
    """Wall seconds of one ``crossfuse`` command; its output goes to ``log``."""
    started = time.perf_counter()
    with open(log, "a") as out:
        subprocess.run(crossfuse_command(*args), check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def latest_run_id(tracking_uri: str, experiment: str) -> str:
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`mlflow.parentRunId` IS NULL",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


def isolated(config: Path | None, work: Path, *overrides: str) -> list[str]:
    """``--config``/``--set`` arguments that keep every output, cache and store under ``work``."""
    args = ["--config", str(config)] if config else []
    for o in (f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
              f"mlflow.artifact_root={work}/mlartifacts",
              f"pipeline.pipeline_root={work}/kfp", f"extract.cache_dir={work}/cache",
              *overrides):
        args += ["--set", o]
    return args


def run_costs(config: Path | None, work: Path, warm_change: str, log: Path) -> dict:
    """Cold run, warm run (``warm_change`` only), and the stages in one process, each timed.

    Returns ``{"cold": {...}, "warm": {...}, "in_process": {...}}``, each with ``wall`` seconds
    and the run's ``stage_*`` metrics.
    """
    args = isolated(config, work)
    cfg = load_config(config, [a for a in args if a != "--set" and "=" in a]).resolved()
    uri, experiment = cfg.mlflow.tracking_uri, cfg.experiment_name()
    out = {}
    out["cold"] = {"wall": timed_run(["run", *args], log)}
    out["cold"].update(stage_metrics(uri, latest_run_id(uri, experiment)))
    out["warm"] = {"wall": timed_run(["run", *args, "--set", warm_change], log)}
    out["warm"].update(stage_metrics(uri, latest_run_id(uri, experiment)))
    in_process = work / "in-process"
    in_args = isolated(config, in_process)
    out["in_process"] = {"wall": timed_run(["bench", "stages", *in_args], log)}
    in_cfg = load_config(config, [a for a in in_args if a != "--set" and "=" in a]).resolved()
    out["in_process"].update(stage_metrics(in_cfg.mlflow.tracking_uri,
                                           latest_run_id(in_cfg.mlflow.tracking_uri, experiment)))
    return out


def run_stages_in_process(cfg: RunConfig, root: Path) -> None:
    """Every stage in this one process, chained as the pipeline chains them."""
    from crossfuse import stages

    run_id, _ = stages.run_validate(cfg, None, root / "validation")
    stages.run_preprocess(cfg, run_id, root / "validation", root / "pre")
    stages.run_extract(cfg, run_id, root / "pre", root / "features")
    stages.run_train(cfg, run_id, root / "features", root / "model")
    stages.run_evaluate(cfg, run_id, root / "features", root / "model", root / "evaluation",
                        root / "pre")
    stages.run_register(cfg, run_id, root / "model", root / "evaluation")


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
