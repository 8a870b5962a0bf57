"""End to end: the real KFP local runner runs the whole DAG against a real MLflow store.

Two runs on the same data and seed: the second reuses every cached feature and,
scoring the same, does not take the champion alias. A run on bad data fails at
validation, leaves its MLflow run FAILED, and moves no alias.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import build_config, top_level
from mlflow.tracking import MlflowClient

from crossfuse.tracking import run_metrics
from pipelines.cli import main
from pipelines.runner import run_local

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    root = tmp_path_factory.mktemp("e2e")
    # Two extract parts: the DAG fans out over dsl.ParallelFor and merges, as on a cluster.
    cfg = build_config(root, sample_dataset, tiny_text_model, tiny_image_model,
                       "train.epochs=20", "pipeline.extract_parts=2")
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    first = run_local(cfg)
    second = run_local(cfg)
    return {"root": root, "cfg": cfg, "first": first, "second": second,
            "client": MlflowClient()}


def runs(env):
    client, cfg = env["client"], env["cfg"]
    exp = client.get_experiment_by_name(cfg.experiment_name())
    return top_level(client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]))


def test_pipeline_outputs_and_champion_decision(env):
    assert env["first"] == {"version": "1", "champion_version": "1", "promoted": True}
    assert env["second"] == {"version": "2", "champion_version": "1", "promoted": False}
    client, name = env["client"], env["cfg"].model_name()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    v2 = client.get_model_version_by_alias(name, "challenger")
    assert str(v2.version) == "2" and v2.tags["crossfuse.decision"] == "not promoted"


def test_one_finished_mlflow_run_per_pipeline_run(env):
    first, second = runs(env)
    for run in (first, second):
        assert run.info.status == "FINISHED"
        # auto's choice travels with the run: the best single modality's CV score beside the
        # winner's, and how optimistic the choice was (a fused winner adds test baselines).
        assert {"test_accuracy", "test_macro_f1", "cv_best_unimodal_macro_f1",
                "selection_optimism"} <= set(run_metrics(run))
        arts = {a.path for a in env["client"].list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/confusion_matrix.png" in arts
    # Same data + config + seed: same metrics.
    assert run_metrics(first)["test_macro_f1"] == run_metrics(second)["test_macro_f1"]


def test_second_run_reuses_cached_features(env):
    first, second = runs(env)
    assert run_metrics(first)["features_image_encoded"] == 60
    assert run_metrics(second)["features_image_encoded"] == 0
    assert run_metrics(second)["features_text_cache_hits"] == 60


def test_bad_data_stops_at_validation_with_one_message_and_moves_no_alias(env, tmp_path, capsys):
    """`crossfuse run` on a broken image: the row-level reason as the error, no traceback."""
    bad = tmp_path / "bad"
    shutil.copytree(env["cfg"].data.path, bad)
    (bad / "images" / "s00002.png").write_bytes(b"")
    cfg = env["cfg"].model_copy(deep=True)
    cfg.data.path = str(bad)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capsys.readouterr()
    assert main(["run", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert "✗ validate" in out and "validation FAILED" not in out  # said once, as the error
    assert err.startswith("crossfuse: error: validation FAILED for sample: 60 rows in")
    assert "line 4 (id='s00002') column 'image'" in err and "empty" in err
    assert "the MLflow run is marked FAILED and no registry alias moved" in err
    assert "Traceback" not in out + err and "\x1b[" not in out + err
    last = runs(env)[-1]
    assert last.info.status == "FAILED"
    assert "line 4" in last.data.tags["crossfuse.error"] and "empty" in last.data.tags[
        "crossfuse.error"]
    name = cfg.model_name()
    assert str(env["client"].get_model_version_by_alias(name, "champion").version) == "1"
    assert str(env["client"].get_model_version_by_alias(name, "challenger").version) == "2"
    log = next((Path(cfg.pipeline.pipeline_root) / "logs").glob("run-*.log")).read_text()
    assert "Traceback" in log  # the task's whole story stays in the log file


def test_extraction_parts_are_merged_into_one_feature_set(env):
    from crossfuse.features.store import read_feature_set

    first = runs(env)[0]
    assert first.data.params["extract.parts"] == "2"
    assert run_metrics(first)["features_image_encoded"] == 60  # the parts' counts, summed
    kfp_root = env["root"] / "kfp"
    merged = sorted(kfp_root.rglob("merge-features/features/index.parquet"))
    parts = sorted(kfp_root.rglob("extract/features/index.parquet"))
    assert len(merged) == 2 and len(parts) == 4  # two runs, two parts each
    fs = read_feature_set(merged[0].parent)
    assert len(fs.index) == 60 and fs.index["line"].is_monotonic_increasing
    assert sorted(len(read_feature_set(p.parent).index) for p in parts[:2]) == [30, 30]
