"""End to end: `crossfuse predict` runs the batch DAG on KFP's local runner with a model from a
real MLflow registry, extraction fanned out over two parts, and exits non-zero on drift only
when asked to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, build_config, run_stages
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]


def predict(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", "--config",
                           str(config), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def test_predict_scores_every_row_and_fails_on_drift_when_asked(
        tmp_path, sample_dataset, tiny_text_model, tiny_image_model):
    cfg = build_config(tmp_path, sample_dataset, tiny_text_model, tiny_image_model,
                       "fusion.method=concat", "evaluate.robustness.raw=false",
                       "evaluate.efficiency=false", "pipeline.extract_parts=2")
    run_stages(cfg, tmp_path / "train")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(json.loads(cfg.to_json())))
    manifest = pd.read_csv(sample_dataset / "manifest.csv", dtype=str, keep_default_na=False)
    batch = tmp_path / "nightly"
    shutil.copytree(sample_dataset, batch)
    manifest.drop(columns=["label"]).to_csv(batch / "manifest.csv", index=False)
    out = tmp_path / "scores" / "nightly.parquet"

    # Unlabelled, so the predicted labels are all there is; the tiny encoders' batch passes.
    done = predict(config, "--data", str(batch), "--out", str(out), "--fail-on-drift",
                   "--set", "drift.max_label_shift=1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "60 of 60 rows scored with crossfuse-sample v1, 0 rejected" in done.stdout
    assert "drift: none" in done.stdout and "predictions: " + str(out) in done.stdout
    predictions = pd.read_parquet(out)
    assert predictions["id"].tolist() == manifest["id"].tolist()  # both parts, in manifest order
    assert np.allclose(predictions.filter(like="p_").sum(axis=1), 1.0)

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("crossfuse-sample-predictions")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["crossfuse.model_version"] == "1"
    assert {"batch/predictions.parquet", "batch/report.html"} <= {
        a.path for a in client.list_artifacts(run.info.run_id, "batch")}
    assert any(a.path.startswith("logs/predict-") for a in client.list_artifacts(run.info.run_id,
                                                                                 "logs"))

    # Every image missing: the image rate crosses its threshold; --fail-on-drift exits 3.
    manifest.assign(image="").drop(columns=["label"]).to_csv(batch / "manifest.csv", index=False)
    drifted = predict(config, "--data", str(batch), "--fail-on-drift",  # one part is enough
                      "--set", "validation.allow_missing_modalities=true",
                      "--set", "pipeline.extract_parts=1")
    assert drifted.returncode == 3, drifted.stdout[-3000:] + drifted.stderr[-3000:]
    assert "image missing in 100.0% of rows" in drifted.stdout
