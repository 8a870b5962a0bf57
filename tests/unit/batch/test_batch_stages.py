"""Batch prediction through its stages (in this process): every row scored or rejected, the
labelled rows scored as evaluate scores its test split, a run per batch, and no predictions
from data that fails validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import batch_config, trained_model
from mlflow.tracking import MlflowClient

from crossfuse.batch.stages import run_batch_in_process
from crossfuse.data.validation.report import ValidationFailed

pytestmark = pytest.mark.slow


def subset(data: Path, out: Path, keep: pd.DataFrame) -> Path:
    """A copy of dataset ``data`` whose manifest holds the rows of ``keep`` (its columns)."""
    shutil.copytree(data, out)
    keep.to_csv(out / "manifest.csv", index=False)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    """A registered model trained on the sample data, and its run's folders."""
    from conftest import build_config

    root = tmp_path_factory.mktemp("batch")
    cfg = trained_model(lambda data, *o: build_config(root, data, tiny_text_model,
                                                      tiny_image_model, *o),
                        sample_dataset, root / "train")
    return cfg, root


def test_test_rows_score_as_evaluate_scored_them(trained, sample_dataset):
    cfg, root = trained
    index = pd.read_parquet(root / "train" / "features" / "index.parquet")
    manifest = pd.read_csv(sample_dataset / "manifest.csv", dtype=str, keep_default_na=False)
    test_ids = index.loc[index["split"] == "test", "id"].tolist()
    data = subset(sample_dataset, root / "test-rows", manifest[manifest["id"].isin(test_ids)])

    result = run_batch_in_process(batch_config(cfg, data), root / "scored")

    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (len(test_ids),
                                                                          len(test_ids), 0)
    assert (result.model, result.version) == ("crossfuse-sample", "1")
    predictions = pd.read_parquet(result.predictions)
    evaluated = pd.read_parquet(root / "train" / "evaluation" / "predictions.parquet")
    assert predictions["id"].tolist() == sorted(test_ids, key=manifest["id"].tolist().index)
    pair = predictions.merge(evaluated, on="id", suffixes=("", "_eval"))
    assert len(pair) == len(test_ids) and (pair["predicted"] == pair["predicted_eval"]).all()
    for c in [c for c in evaluated.columns if c.startswith("p_")]:
        np.testing.assert_allclose(pair[c], pair[f"{c}_eval"], rtol=1e-5, atol=1e-6)
    assert set(predictions["modalities"]) == {"image+text"}
    assert set(predictions["model_version"]) == {"1"}

    scored = json.loads((root / "scored" / "predictions" / "metrics.json").read_text())
    evaluate = json.loads((root / "train" / "evaluation" / "metrics.json").read_text())
    for name in ("accuracy", "macro_f1", "micro_f1", "log_loss", "auroc_ovr", "auprc_ovr",
                 "ece", "ece_calibrated", "log_loss_calibrated", "samples"):
        assert scored[f"labelled_{name}"] == pytest.approx(evaluate[f"test_{name}"], abs=1e-6), name

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "crossfuse-sample-predictions"
    assert run.info.status == "FINISHED"
    assert run.data.tags["crossfuse.model_version"] == "1"
    assert len(run.data.tags["data.content_sha256"]) == 64
    assert run.data.metrics["batch/rows_scored"] == len(test_ids)
    assert run.data.metrics["batch/rows_in_training"] == 0      # test rows: none trained on
    assert "drift/label_shift" in run.data.metrics
    logged = {f.path for f in client.list_artifacts(result.run_id, "batch")}
    assert {"batch/predictions.parquet", "batch/report.html", "batch/drift.json",
            "batch/predictions.png"} <= logged
    version = client.get_model_version("crossfuse-sample", "1")
    assert version.tags["crossfuse.batch.last_run"] == result.run_id
    assert not predictions["in_training"].any()
    page = Path(result.report).read_text()
    assert "Metrics on the labelled rows the model never saw" in page and "Embedding drift" in page
    assert "none of these rows is in the model&#39;s training data" in page
    # What a person checks first: the classes and confidence drawn, the least sure rows listed.
    assert 'alt="predicted classes and confidence"' in page
    confidence = predictions.filter(like="p_").max(axis=1)
    least = predictions.loc[confidence.sort_values(kind="stable").index[:3], "id"]
    assert "Least confident predictions" in page
    assert page.index(f">{least.iloc[0]}</td>") < page.index(f">{least.iloc[2]}</td>")


def test_unlabelled_and_bad_rows_are_each_scored_or_rejected(trained, sample_dataset):
    cfg, root = trained
    manifest = pd.read_csv(sample_dataset / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest.index[:20], "label"] = ""            # unlabelled rows are scored
    manifest.loc[manifest.index[20], "label"] = "zebra"         # not one of the model's classes
    manifest.loc[manifest.index[21], "image"] = "images/missing.png"
    data = subset(sample_dataset, root / "mixed", manifest)

    result = run_batch_in_process(batch_config(cfg, data, "drop"),
                                  root / "mixed-out")

    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (60, 58, 2)
    predictions = pd.read_parquet(result.predictions)
    assert len(predictions) == 58 and predictions["id"].is_unique
    rejects = pd.read_csv(root / "mixed-out" / "validation" / "rejects.csv")
    assert set(rejects["id"]) == set(manifest["id"].iloc[[20, 21]])
    assert "not one of the model's classes" in " ".join(rejects["reason"])
    assert set(predictions["id"]) | set(rejects["id"]) == set(manifest["id"])
    metrics = json.loads((root / "mixed-out" / "predictions" / "metrics.json").read_text())
    index = pd.read_parquet(root / "train" / "features" / "index.parquet")
    learned = set(index.loc[index["split"].isin(["train", "val"]), "id"])
    assert metrics["batch_rows_in_training"] == len(learned & set(predictions["id"])) > 0
    assert set(predictions.loc[predictions["in_training"], "id"]) == learned & set(predictions["id"])
    # Headline metrics on the labelled rows the model never trained on, and only those.
    labelled = predictions["label"] != ""
    unseen = labelled & ~predictions["in_training"]
    assert metrics["batch_rows_labelled"] == metrics["labelled_samples"] == unseen.sum() > 0
    assert metrics["batch_rows_labelled_in_training"] == (labelled & predictions["in_training"]).sum()
    assert metrics["batch_rows_labelled"] + metrics["batch_rows_labelled_in_training"] == 38
    assert metrics["labelled_accuracy"] == pytest.approx(
        (predictions.loc[unseen, "label"] == predictions.loc[unseen, "predicted"]).mean())
    assert "are left out, since a score on them is not a test" in Path(result.report).read_text()

    unlabelled = subset(sample_dataset, root / "unlabelled", manifest.drop(columns=["label"])
                        .drop(index=[20, 21]))
    result = run_batch_in_process(batch_config(cfg, unlabelled), root / "unlabelled-out")
    predictions = pd.read_parquet(result.predictions)
    assert len(predictions) == 58 and "label" not in predictions.columns
    metrics = json.loads((root / "unlabelled-out" / "predictions" / "metrics.json").read_text())
    assert not any(k.startswith("labelled_") for k in metrics)


def test_a_model_with_media_hashes_from_before_the_array_layout_says_in_training_is_unknown(
        trained, tmp_path):
    """A model registered before media were stored as arrays kept hashes of the preprocessed
    files' bytes: no new row can match them, so in_training must be unknown, not all False."""
    from crossfuse.batch.report import metric_table
    from crossfuse.batch.stages import _trained_hashes
    from crossfuse.features.reference import REFERENCE_FILE, reference_rows

    _, root = trained
    model = root / "train" / "model"
    rows = reference_rows(model)
    trained_hashes, why = _trained_hashes(rows, model)
    assert why == "" and trained_hashes["image"] == set(rows["hash_image"]) - {""}

    old = shutil.copytree(model, tmp_path / "old-model")
    rows.to_parquet(old / REFERENCE_FILE, index=False)  # as written before: no hash metadata
    unknown, why = _trained_hashes(reference_rows(old), old)
    assert unknown is None and "not known" in why and "a model trained since then" in why
    note = metric_table({"labelled_macro_f1": 0.5}, rows_in_training=None)
    assert "is not known" in str(note)


def test_data_that_fails_validation_gives_no_predictions_and_a_failed_run(trained,
                                                                          sample_dataset):
    cfg, root = trained
    manifest = pd.read_csv(sample_dataset / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest.index[3], "image"] = "images/missing.png"
    data = subset(sample_dataset, root / "bad", manifest)

    with pytest.raises(ValidationFailed, match="images/missing.png"):
        run_batch_in_process(batch_config(cfg, data), root / "bad-out")

    assert not (root / "bad-out" / "predictions").exists()
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("crossfuse-sample-predictions")
    runs = client.search_runs([experiment.experiment_id], "tags.`crossfuse.failed_stage` = 'validate'")
    assert runs and all(r.info.status == "FAILED" for r in runs)
