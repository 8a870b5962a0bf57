"""Each component alone, fast: ``.python_func`` with real KFP artifacts, the stage replaced.

In the style of the Vertex AI samples' ``components/tests``: the stage function
(``crossfuse.stages.run_*``) is swapped for a recorder that returns a real result
object, so each test checks only the component's own job — which paths and config it
hands the stage, and what it writes back into KFP's artifacts (metadata, metrics,
HTML, confusion matrix, outputs). ``test_components.py`` runs the same components
for real, chained, against MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

from components import evaluate, extract, merge_features, preprocess, register, train, validate
from crossfuse import stages
from crossfuse.config import RunConfig, load_config
from crossfuse.data.preprocess import PreprocessResult
from crossfuse.data.validation import RowIssue, ValidationReport
from crossfuse.evaluation.evaluate import EvaluationResult
from crossfuse.features.extract import ExtractResult
from crossfuse.registry.register import RegisterResult
from crossfuse.training.loop import TrainResult


@pytest.fixture
def config_json() -> str:
    return load_config(None, ["fusion.method=late", "data.path=/data/set"], env={}).to_json()


@pytest.fixture
def make(tmp_path):
    def build(cls, name: str, metadata: dict | None = None):
        return cls(name=name, uri=str(tmp_path / name), metadata=dict(metadata or {}))
    return build


@pytest.fixture
def calls(monkeypatch):
    """Replace ``stages.run_<name>`` by a recorder returning ``result(*args)``."""
    seen: dict[str, tuple] = {}

    def replace(name: str, result):
        def fake(*args, **kwargs):
            seen[name] = (args, kwargs)
            return result(*args, **kwargs) if callable(result) else result
        monkeypatch.setattr(stages, f"run_{name}", fake)
    replace.seen = seen
    return replace


def test_validate_returns_the_run_id_and_publishes_counts_and_data_docs(config_json, make, calls):
    report = ValidationReport("set", n_rows=5, issues=[RowIssue(3, "b", "image", "image empty")])

    def fake(cfg, run_id, out, kfp_run, run_token):
        (out / "data_docs").mkdir(parents=True)
        (out / "data_docs" / "index.html").write_text("<html>docs</html>")
        return "run-123", report

    calls("validate", fake)
    validation, docs, metrics = make(Artifact, "validation"), make(HTML, "docs"), make(Metrics, "m")
    assert validate.python_func(config_json=config_json, validation=validation, data_docs=docs,
                                metrics=metrics, kfp_run="job-7", run_token="t") == "run-123"
    (cfg, run_id, out), names = calls.seen["validate"]
    assert isinstance(cfg, RunConfig) and cfg.fusion.method == "late" and run_id is None
    # The MLflow run is tagged with the KFP run, where the exit handler finds it.
    assert names == {"kfp_run": "job-7", "run_token": "t"}
    assert out == Path(validation.path)
    assert Path(docs.path).read_text() == "<html>docs</html>"
    assert metrics.metadata == {"rows": 5, "valid": 4, "rejected": 1}


def test_preprocess_hands_the_run_id_on_through_the_dataset(config_json, make, calls):
    calls("preprocess", PreprocessResult(n_samples=9, split_counts={"train": 6, "val": 2, "test": 1},
                                         labels=["a", "b"]))
    validation, dataset = make(Artifact, "validation"), make(Dataset, "dataset")
    preprocess.python_func(config_json=config_json, run_id="run-1", validation=validation,
                           dataset=dataset)
    (_, run_id, src, out), _ = calls.seen["preprocess"]
    assert (run_id, src, out) == ("run-1", Path(validation.path), Path(dataset.path))
    assert dataset.metadata == {"samples": 9, "train": 6, "val": 2, "test": 1,
                                "mlflow_run_id": "run-1"}


def test_extract_casts_loop_items_and_reads_the_run_id_from_the_dataset(config_json, make, calls):
    calls("extract", ExtractResult(n_samples=4, dims={"text": 8}, cache_hits={"text": 1},
                                   encoded={"text": 3}))
    dataset = make(Dataset, "dataset", {"mlflow_run_id": "run-7"})
    features = make(Dataset, "part")
    # kfp's local runner hands dsl.ParallelFor items over as floats.
    extract.python_func(config_json=config_json, part=1.0, parts=2.0, dataset=dataset,
                        features=features)
    (_, run_id, src, out), kwargs = calls.seen["extract"]
    assert (run_id, src, out) == ("run-7", Path(dataset.path), Path(features.path))
    assert kwargs["part"] == (1, 2) and all(type(v) is int for v in kwargs["part"])
    assert features.metadata == {"samples": 4, "encoded": {"text": 3}}


def test_merge_features_passes_every_part_in_order(config_json, make, calls):
    calls("merge_features", ExtractResult(n_samples=8, dims={"text": 8}, cache_hits={"text": 8},
                                          encoded={"text": 0}))
    parts = [make(Dataset, f"part-{i}") for i in range(3)]
    features = make(Dataset, "features")
    merge_features.python_func(config_json=config_json, run_id="r", parts=parts, features=features)
    (_, run_id, paths, out), _ = calls.seen["merge_features"]
    assert run_id == "r" and paths == [Path(p.path) for p in parts] and out == Path(features.path)
    assert features.metadata == {"samples": 8, "dims": {"text": 8}, "cache_hits": {"text": 8},
                                 "encoded": {"text": 0}}


def test_train_records_the_method_and_best_epoch(config_json, make, calls):
    calls("train", TrainResult(method="late", modalities=["image", "text"], best_epoch=7,
                               epochs_run=12, best_val_macro_f1=0.81))
    features, model, metrics = make(Dataset, "features"), make(Model, "model"), make(Metrics, "m")
    train.python_func(config_json=config_json, run_id="r", features=features, model=model,
                      metrics=metrics)
    (_, _, src, out), _ = calls.seen["train"]
    assert (src, out) == (Path(features.path), Path(model.path))
    assert model.metadata == {"method": "late", "best_epoch": 7}
    assert metrics.metadata == {"best_val_macro_f1": 0.81, "best_epoch": 7}


def test_evaluate_shows_headline_metrics_report_and_confusion_matrix(config_json, make, calls):
    features = make(Dataset, "features")
    Path(features.path).mkdir()
    (Path(features.path) / "labels.json").write_text(json.dumps(["cat", "dog"]))

    def fake(cfg, run_id, feats, model_dir, out, preprocessed):
        out.mkdir(parents=True)
        (out / "report.html").write_text("<html>report</html>")
        return EvaluationResult(metrics={"test_macro_f1": 0.9, "fusion_gain_macro_f1": 0.05,
                                         "test_precision_cat": 1.0, "baseline_text_test_macro_f1": 0.85},
                                report={}, confusion=[[3, 1], [0, 4]])

    calls("evaluate", fake)
    dataset, model = make(Dataset, "dataset"), make(Model, "model")
    evaluation, report = make(Artifact, "evaluation"), make(HTML, "report")
    metrics, classification = make(Metrics, "m"), make(ClassificationMetrics, "c")
    evaluate.python_func(config_json=config_json, run_id="r", dataset=dataset, features=features,
                         model=model, evaluation=evaluation, report=report, metrics=metrics,
                         classification=classification)
    _, kwargs = calls.seen["evaluate"]
    assert kwargs["preprocessed"] == Path(dataset.path)
    assert Path(report.path).read_text() == "<html>report</html>"
    # Per-class details stay in MLflow; KFP's Metrics panel gets the headline ones.
    assert metrics.metadata == {"test_macro_f1": 0.9, "fusion_gain_macro_f1": 0.05,
                                "baseline_text_test_macro_f1": 0.85}
    matrix = classification.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["cat", "dog"]
    assert [r["row"] for r in matrix["rows"]] == [[3, 1], [0, 4]]


def test_register_returns_version_champion_and_decision(config_json, make, calls):
    calls("register", RegisterResult(model_name="crossfuse-set", version="4", promoted=False,
                                     reason="does not beat champion v2", champion_version="2",
                                     checks=[]))
    model, evaluation = make(Model, "model"), make(Artifact, "evaluation")
    out = register.python_func(config_json=config_json, run_id="r", model=model,
                               evaluation=evaluation)
    (_, run_id, model_dir, eval_dir), _ = calls.seen["register"]
    assert (run_id, model_dir, eval_dir) == ("r", Path(model.path), Path(evaluation.path))
    assert (out.version, out.champion_version, out.promoted) == ("4", "2", False)
    assert out.reason == "does not beat champion v2"
