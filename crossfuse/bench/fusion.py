"""``crossfuse bench fusion``: every fusion method and unimodal baseline, tuned the same way.

Protocol, per method (and per unimodal baseline, ``unimodal:<modality>``, which is the
``concat`` head on that modality alone):

1. a seeded Optuna search of ``trials`` trials on the validation split (seed 0);
2. with the best settings, one training run per seed, early-stopped on validation;
3. test accuracy and macro-F1, trainable parameter count, training wall time, and
   inference latency per sample (features -> probabilities, median of 3 passes).

Results: a JSON list of rows, a markdown table of mean ± std over seeds, and one MLflow
run per row in the experiment ``bench-<dataset>``.

Example
-------
>>> rows = bench_fusion(fs, cfg, methods=["concat", "late"], seeds=[0, 1], trials=4)  # doctest: +SKIP
>>> print(markdown_table(rows))                                                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import mlflow

from crossfuse.config import RunConfig
from crossfuse.data.preprocess import preprocess
from crossfuse.data.validation import require_valid, validate
from crossfuse.errors import UserError
from crossfuse.evaluation.efficiency import inference_ms_per_sample, parameter_count
from crossfuse.features.extract import extract
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FUSION_METHODS
from crossfuse.metrics import predict_split
from crossfuse.tracking import configure
from crossfuse.training.loop import fit
from crossfuse.training.tuning import search

log = logging.getLogger(__name__)

UNIMODAL_PREFIX = "unimodal:"


def prepare_features(cfg: RunConfig, workdir: Path) -> Path:
    """Validate, preprocess and extract ``cfg.data.path`` into ``workdir`` (feature cache first).

    Raises :class:`crossfuse.data.validation.ValidationFailed` on bad data.
    """
    data = Path(cfg.data.path)
    require_valid(validate(cfg, data, workdir / "validation"))
    preprocess(cfg, data, workdir / "preprocessed")
    extract(cfg, workdir / "preprocessed", workdir / "features")
    return workdir / "features"


def bench_one(fs: FeatureSet, cfg: RunConfig, name: str, seeds: list[int], trials: int,
              search_epochs: int) -> list[dict]:
    """Tune ``name`` once (seed 0), then train and test it once per seed."""
    modalities = None
    fusion = cfg.fusion.model_copy(update={"method": name, "options": {}})
    if name.startswith(UNIMODAL_PREFIX):
        modalities = [name[len(UNIMODAL_PREFIX):]]
        fusion = fusion.model_copy(update={"method": "concat"})
    train_cfg, hyper = cfg.train, {}
    if trials > 0:
        best = search(fs, fusion, train_cfg, seed=0, trials=trials, epochs=search_epochs,
                      modalities=modalities)
        fusion, train_cfg, hyper = best.fusion, best.train, best.params
    rows = []
    used = modalities or fs.modalities
    for seed in seeds:
        start = time.perf_counter()
        head, result = fit(fs, fusion, train_cfg, seed, modalities=modalities)
        seconds = time.perf_counter() - start
        inputs = fs.split_inputs("test", used, head.spec.token_inputs)
        scores = predict_split(head, inputs)
        rows.append({
            "method": name, "seed": seed,
            "test_accuracy": scores.accuracy,
            "test_macro_f1": scores.macro_f1,
            "val_macro_f1": result.best_val_macro_f1,
            "params": parameter_count(head),
            "hyperparameters": hyper,
            "train_seconds": round(seconds, 3),
            "token_inputs": head.spec.token_inputs,
            "infer_ms_per_sample": round(inference_ms_per_sample(head, inputs), 5)})
        log.info("bench %s seed %d: test macro-F1 %.4f", name, seed, rows[-1]["test_macro_f1"])
    return rows


def bench_fusion(fs: FeatureSet, cfg: RunConfig, methods: list[str] | None = None,
                 seeds: list[int] | None = None, trials: int = 8, search_epochs: int = 40,
                 baselines: bool = True) -> list[dict]:
    """Benchmark ``methods`` (default: all registered) plus one baseline per modality."""
    methods = methods or sorted(FUSION_METHODS)
    unknown = [m for m in methods if m not in FUSION_METHODS]
    if unknown:
        raise UserError(f"unknown fusion methods {unknown}; available: {sorted(FUSION_METHODS)}")
    names = list(methods)
    if baselines and len(fs.modalities) > 1:
        names += [UNIMODAL_PREFIX + m for m in fs.modalities]
    rows = []
    for name in names:
        rows += bench_one(fs, cfg, name, seeds or [0, 1, 2], trials, search_epochs)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """One dict per method: mean and std over seeds of the numeric columns, best first."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        summary = {"method": method, "seeds": len(group), "params": group[0]["params"]}
        for key in ("test_macro_f1", "test_accuracy", "train_seconds", "infer_ms_per_sample"):
            values = [r[key] for r in group]
            summary[key] = statistics.fmean(values)
            summary[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(summary)
    return sorted(out, key=lambda s: -s["test_macro_f1"])


def markdown_table(rows: list[dict]) -> str:
    """Mean ± std over seeds per method, sorted by test macro-F1."""
    lines = ["| method | test macro-F1 | test accuracy | params | train s | infer ms/sample |",
             "|---|---|---|---|---|---|"]
    for s in summarise(rows):
        lines.append(
            f"| {s['method']} | {s['test_macro_f1']:.3f} ± {s['test_macro_f1_std']:.3f} "
            f"| {s['test_accuracy']:.3f} ± {s['test_accuracy_std']:.3f} | {s['params']:,} "
            f"| {s['train_seconds']:.1f} | {s['infer_ms_per_sample']:.4f} |")
    return "\n".join(lines)


def log_to_mlflow(cfg: RunConfig, rows: list[dict]) -> str:
    """One MLflow run per row in experiment ``bench-<dataset>``; returns the experiment id."""
    bench_cfg = cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(
        update={"experiment": f"bench-{cfg.data.dataset_name()}"})})
    experiment_id = configure(bench_cfg)
    for r in rows:
        with mlflow.start_run(run_name=f"{r['method']}-seed{r['seed']}"):
            mlflow.log_params({"method": r["method"], "seed": r["seed"], "params": r["params"],
                               **{f"hp.{k}": v for k, v in r["hyperparameters"].items()}})
            mlflow.log_metrics({k: r[k] for k in ("test_accuracy", "test_macro_f1", "val_macro_f1",
                                                   "train_seconds", "infer_ms_per_sample")})
    return experiment_id
