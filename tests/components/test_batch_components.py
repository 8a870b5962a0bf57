"""The batch pipeline's components alone (``.python_func``, real KFP artifacts, the stage
replaced): what each hands its stage and what it writes back into KFP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components import batch_preprocess, batch_score, batch_validate, extract
from crossfuse import stages
from crossfuse.batch import stages as batch_stages
from crossfuse.batch.stages import BatchResult
from crossfuse.config import RunConfig, load_config
from crossfuse.data.validation import ValidationReport
from crossfuse.features.extract import ExtractResult


@pytest.fixture
def make(tmp_path):
    def build(cls, name: str, metadata: dict | None = None):
        return cls(name=name, uri=str(tmp_path / name), metadata=dict(metadata or {}))
    return build


def config(*overrides: str) -> RunConfig:
    return load_config(None, ["data.path=/data/nightly", *overrides], env={})


def test_batch_validate_returns_the_run_and_the_scoring_config(make, monkeypatch):
    scoring = config("predict.model=m@champion", "extract.max_tokens=16")

    def fake(cfg, validation_dir, model_dir):
        assert cfg.data.path == "/data/nightly" and model_dir.parent == validation_dir.parent
        (validation_dir / "data_docs").mkdir(parents=True)
        (validation_dir / "data_docs" / "index.html").write_text("<html>docs</html>")
        return "run-9", scoring, ValidationReport("nightly", n_rows=4)

    monkeypatch.setattr(batch_stages, "run_batch_validate", fake)
    validation, model = make(Artifact, "validation"), make(Model, "model")
    docs, metrics = make(HTML, "docs"), make(Metrics, "m")
    out = batch_validate.python_func(config_json=config().to_json(), validation=validation,
                                     model=model, data_docs=docs, metrics=metrics)
    assert out.run_id == "run-9" and RunConfig.from_json(out.scoring_config) == scoring
    assert Path(docs.path).read_text() == "<html>docs</html>"
    assert metrics.metadata == {"rows": 4, "valid": 4, "rejected": 0}


def test_the_scoring_config_reaches_extract_through_the_dataset(make, monkeypatch):
    """kfp 2.17's local runner overwrote outer string parameters inside ParallelFor: the batch's
    config, made at run time, travels in the dataset's metadata and wins over config_json."""
    scoring = config("extract.max_tokens=16")
    monkeypatch.setattr(batch_stages, "run_batch_preprocess", lambda *a: 7)
    dataset = make(Dataset, "dataset")
    batch_preprocess.python_func(scoring_config=scoring.to_json(), run_id="run-9",
                                 validation=make(Artifact, "v"), model=make(Model, "m"),
                                 dataset=dataset)
    assert dataset.metadata["mlflow_run_id"] == "run-9" and dataset.metadata["samples"] == 7

    seen = {}

    def fake_extract(cfg, run_id, src, out, part):
        seen.update(cfg=cfg, run_id=run_id, part=part)
        return ExtractResult(n_samples=3, dims={"text": 8}, cache_hits={"text": 0},
                             encoded={"text": 3})

    monkeypatch.setattr(stages, "run_extract", fake_extract)
    extract.python_func(config_json=config().to_json(), part=0.0, parts=1.0, dataset=dataset,
                        features=make(Dataset, "features"))
    assert seen["cfg"].extract.max_tokens == 16 and seen["run_id"] == "run-9"


def test_batch_score_publishes_the_report_and_the_drift_verdict(make, monkeypatch, tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html>batch</html>")
    result = BatchResult(run_id="run-9", model="m", version="3", rows_in=10, rows_scored=9,
                         rows_rejected=1, predictions=str(tmp_path / "p.parquet"),
                         report=str(page), flagged=["image embeddings: ..."], drift_checked=True)
    monkeypatch.setattr(batch_stages, "run_batch_score", lambda *a: result)
    predictions, report, metrics = make(Dataset, "pred"), make(HTML, "report"), make(Metrics, "m")
    out = batch_score.python_func(scoring_config=config().to_json(), run_id="run-9",
                                  model=make(Model, "model"), validation=make(Artifact, "v"),
                                  parts=[make(Dataset, "part-0")], predictions=predictions,
                                  report=report, metrics=metrics)
    assert out.drift is True and json.loads(out.result)["rows_scored"] == 9
    assert Path(report.path).read_text() == "<html>batch</html>"
    assert predictions.metadata == {"rows": 9, "model_version": "3"}
    assert metrics.metadata == {"rows_scored": 9, "rows_rejected": 1}
