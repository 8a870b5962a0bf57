"""Each KFP component called through ``.python_func`` with real KFP artifact objects.

The six components run in DAG order on the small sample dataset (tiny encoders),
against a real SQLite MLflow store; then each test checks what one of them left.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import build_config, free_port, http_server
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model
from mlflow.tracking import MlflowClient

from components import (
    evaluate,
    extract,
    merge_features,
    preprocess,
    register,
    train,
    validate,
)
from crossfuse.tracking import run_metrics


def artifact(cls, root: Path, name: str):
    return cls(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    root = tmp_path_factory.mktemp("components")
    cfg = build_config(root, sample_dataset, tiny_text_model, tiny_image_model, "fusion.method=concat")
    config_json = cfg.to_json()
    a = {name: artifact(cls, root / "artifacts", name) for name, cls in [
        ("validation", Artifact), ("data_docs", HTML), ("validation_metrics", Metrics),
        ("dataset", Dataset), ("part-0", Dataset), ("part-1", Dataset), ("features", Dataset),
        ("model", Model),
        ("train_metrics", Metrics), ("evaluation", Artifact), ("report", HTML),
        ("eval_metrics", Metrics), ("classification", ClassificationMetrics)]}
    (root / "artifacts").mkdir()
    run_id = validate.python_func(config_json=config_json, validation=a["validation"],
                                  data_docs=a["data_docs"], metrics=a["validation_metrics"])
    preprocess.python_func(config_json=config_json, run_id=run_id, validation=a["validation"],
                           dataset=a["dataset"])
    for i in range(2):  # as dsl.ParallelFor runs it with pipeline.extract_parts=2
        extract.python_func(config_json=config_json, part=i, parts=2,
                            dataset=a["dataset"], features=a[f"part-{i}"])
    merge_features.python_func(config_json=config_json, run_id=run_id,
                               parts=[a["part-0"], a["part-1"]], features=a["features"])
    train.python_func(config_json=config_json, run_id=run_id, features=a["features"],
                      model=a["model"], metrics=a["train_metrics"])
    evaluate.python_func(config_json=config_json, run_id=run_id, dataset=a["dataset"],
                         features=a["features"], model=a["model"], evaluation=a["evaluation"],
                         report=a["report"], metrics=a["eval_metrics"],
                         classification=a["classification"])
    registration = register.python_func(config_json=config_json, run_id=run_id,
                                        model=a["model"], evaluation=a["evaluation"])
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return {"cfg": cfg, "run_id": run_id, "artifacts": a, "registration": registration}


def test_validate_outputs(pipeline_run):
    a = pipeline_run["artifacts"]
    assert a["validation_metrics"].metadata == {"rows": 60, "valid": 60, "rejected": 0}
    assert "<html" in Path(a["data_docs"].path).read_text().lower()
    assert json.loads((Path(a["validation"].path) / "report.json").read_text())["success"]


def test_preprocess_and_extract_metadata(pipeline_run):
    a = pipeline_run["artifacts"]
    meta = a["dataset"].metadata
    assert meta["samples"] == 60 == meta["train"] + meta["val"] + meta["test"]
    assert [a[f"part-{i}"].metadata["samples"] for i in range(2)] == [30, 30]
    assert a["features"].metadata["dims"] == {"image": 32, "text": 32}
    assert a["features"].metadata["cache_hits"] == {"image": 0, "text": 0}
    # Identical captions are encoded once.
    captions = pd.read_csv(Path(pipeline_run["cfg"].data.path) / "manifest.csv")["text"]
    assert a["features"].metadata["encoded"] == {"image": 60, "text": captions.nunique()}


def test_train_and_evaluate_report_to_kfp(pipeline_run):
    a = pipeline_run["artifacts"]
    assert 0.0 <= a["train_metrics"].metadata["best_val_macro_f1"] <= 1.0
    m = a["eval_metrics"].metadata
    assert {"test_accuracy", "test_macro_f1", "test_micro_f1", "test_log_loss", "test_auroc_ovr",
            "test_auprc_ovr", "baseline_image_test_macro_f1", "baseline_text_test_macro_f1",
            "fusion_gain_macro_f1"} <= set(m)
    assert 0.0 <= m["test_auroc_ovr"] <= 1.0 and m["test_log_loss"] > 0
    assert {"test_ece", "test_ece_calibrated", "test_log_loss_calibrated"} <= set(m)
    # Temperature scaling changes confidence, never the prediction.
    preds = pd.read_parquet(Path(a["evaluation"].path) / "predictions.parquet")
    probs = preds[[c for c in preds.columns if c.startswith("p_")]]
    assert (probs.idxmax(axis=1).str[2:] == preds["predicted"]).all()
    assert m["test_accuracy"] == (preds["predicted"] == preds["label"]).mean()
    assert (Path(a["evaluation"].path) / "reliability_diagram.png").stat().st_size > 1000
    subsets = pd.read_csv(Path(a["evaluation"].path) / "modality_subsets.csv")
    assert subsets["subset"].tolist() == ["image", "text", "image+text"]
    assert subsets.iloc[-1]["macro_f1"] == pytest.approx(m["test_macro_f1"])
    assert m["present_image_and_text_test_macro_f1"] == pytest.approx(m["test_macro_f1"])
    assert {"present_image_test_macro_f1", "present_text_test_accuracy"} <= set(m)
    cm = a["classification"].metadata["confusionMatrix"]
    assert len(cm["rows"]) == 6
    total = sum(sum(r["row"]) for r in cm["rows"])
    assert total == m["test_samples"]
    assert (Path(a["evaluation"].path) / "confusion_matrix.png").stat().st_size > 1000


def test_one_mlflow_run_holds_every_stage(pipeline_run):
    client = MlflowClient()
    run = client.get_run(pipeline_run["run_id"])
    assert run.info.status == "FINISHED"
    for stage in ("validate", "preprocess", "extract", "train", "evaluate", "register"):
        assert run.data.tags[f"crossfuse.stage.{stage}"] == "done"
    assert run.data.tags["data.manifest_sha256"]
    assert run.data.params["fusion.method"] == "concat"
    # Sectioned names, so the MLflow UI groups the charts (test/, validation/, train/...).
    assert {"test/macro_f1", "validation/rows", "preprocess/samples_train",
            "baseline/text_test_macro_f1", "calibration/ece"} <= set(run.data.metrics)
    curve = client.get_metric_history(run.info.run_id, "train/val_macro_f1")
    assert len(curve) == int(run.data.metrics["train/epochs_run"]) and curve[0].step == 1
    paths = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in paths


def test_register_sets_aliases_and_tags(pipeline_run):
    reg = pipeline_run["registration"]
    assert (reg.version, reg.champion_version, reg.promoted) == ("1", "1", True)
    client = MlflowClient()
    name = pipeline_run["cfg"].model_name()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    mv = client.get_model_version_by_alias(name, "challenger")
    assert mv.tags["crossfuse.decision"] == "promoted" and "no champion" in mv.tags[
        "crossfuse.reason"]
    assert mv.run_id == pipeline_run["run_id"]
    assert json.loads(mv.tags["crossfuse.gate"])[0]["detail"] == "no champion yet"
    run_tags = client.get_run(pipeline_run["run_id"]).data.tags
    assert run_tags["crossfuse.decision"] == "promoted"  # the run carries the decision too
    # What the UI shows first on the version and on the run: the decision, why, the headline
    # metric with its interval; the gate's raw JSON stays in a tag.
    assert mv.description.startswith(f"**{name} v1 was promoted to champion (no champion yet")
    assert "test macro-F1" in mv.description and "(95% CI " in mv.description
    assert "[{" not in mv.description
    note = run_tags["mlflow.note.content"]
    assert note.startswith(mv.description) and "crossfuse pipeline on sample" in note


def test_ui_opens_on_the_latest_training_run(pipeline_run, capsys):
    from pipelines.cli import main

    uri = pipeline_run["cfg"].mlflow.tracking_uri
    assert main(["ui", "--print-url", "--set", f"mlflow.tracking_uri={uri}"]) == 0
    out = capsys.readouterr().out
    run = MlflowClient().get_run(pipeline_run["run_id"])
    assert (f"the latest run: http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/"
            f"{run.info.run_id}?workflowType=machine_learning") in out


def test_the_registered_model_is_code_and_weights_with_an_example_request(pipeline_run, tmp_path):
    from mlflow.models import Model

    name = pipeline_run["cfg"].model_name()
    uri = f"models:/{name}@champion"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    files = {p.name for p in local.rglob("*")}
    assert "python_model.pkl" not in files and "pyfunc_model.py" in files  # models-from-code
    assert "fusion_head.safetensors" in files
    model = Model.load(str(local))
    example = model.load_input_example(str(local))
    assert list(example.columns) == ["image", "text"] and len(example) == 1
    # The example is a real request: the served model answers it.
    served = mlflow.pyfunc.load_model(uri).predict(example)
    labels = pd.read_parquet(Path(pipeline_run["artifacts"]["evaluation"].path)
                             / "predictions.parquet")["label"]
    assert served["label"].iloc[0] in set(labels)


def test_robustness_sweeps(pipeline_run):
    """11 levels per modality and noise kind; level 0 is the clean test score."""
    a = pipeline_run["artifacts"]
    m = a["eval_metrics"].metadata
    curves = pd.read_csv(Path(a["evaluation"].path) / "robustness.csv")
    kinds = {(r.modality, r.kind) for r in curves.itertuples()}
    assert kinds == {("image", "features"), ("text", "features"), ("image", "pixel_noise"),
                     ("text", "word_dropout")}
    for _, curve in curves.groupby(["modality", "kind"]):
        assert curve["level"].tolist() == pytest.approx([i / 10 for i in range(11)])
        assert curve["macro_f1"].iloc[0] == pytest.approx(m["test_macro_f1"])
    for modality, kind in kinds:
        assert 0.0 <= m[f"robustness_{modality}_{kind}_auc"] <= 1.0
    assert (Path(a["evaluation"].path) / "robustness.png").stat().st_size > 1000


def test_importance_and_efficiency(pipeline_run):
    a = pipeline_run["artifacts"]
    m = a["eval_metrics"].metadata
    importance = pd.read_csv(Path(a["evaluation"].path) / "importance.csv").set_index("modality")
    for modality in ("image", "text"):
        # Dropping a modality costs exactly the gap to the matrix row without it.
        other = "text" if modality == "image" else "image"
        assert importance.loc[modality, "drop"] == pytest.approx(
            m["test_macro_f1"] - m[f"present_{other}_test_macro_f1"])
        assert m[f"importance_permutation_{modality}"] == importance.loc[modality, "permutation"]
    run = run_metrics(MlflowClient().get_run(pipeline_run["run_id"]))
    assert run["efficiency_head_parameters"] > 0 and run["efficiency_features_ms_per_sample"] > 0
    # The model was promoted, so register profiled it as served, on the raw test requests
    # evaluate wrote (64 asked, the test split is smaller).
    requests = pd.read_parquet(Path(a["evaluation"].path) / "serving_inputs.parquet")
    assert len(requests) == m["test_samples"]
    profile = mlflow.artifacts.load_dict(
        f"runs:/{pipeline_run['run_id']}/evaluation/serving_profile.json")
    assert profile["samples"] == m["test_samples"] and profile["from_cache"] is False
    assert run["efficiency_peak_rss_mb"] == profile["peak_rss_mb"] > 50
    assert run["efficiency_raw_ms_per_sample_batched"] > 0
    assert run["efficiency_text_encoder_parameters"] > 0


def test_report_is_one_html_page_in_kfp_and_mlflow(pipeline_run, tmp_path):
    a = pipeline_run["artifacts"]
    page = Path(a["report"].path).read_text()
    for section in ("Test metrics", "Per class", "Misclassified examples", "Training curves",
                    "Calibration", "Missing modalities", "Noise robustness",
                    "Modality importance", "Efficiency", "Run"):
        assert f"<h2>{section}</h2>" in page
    # Every plot embedded (the fused-vs-single bars, confusion, curves, reliability, subsets,
    # robustness, importance): no loose files.
    assert page.count('src="data:image/png;base64,') >= 7 and page.count("src=") == page.count(
        'src="data:image/png;base64,')
    assert page.index("fusion gained") < page.index("<h2>Test metrics</h2>")
    # The data it rests on, from the run: rows in, used and rejected, and the split sizes.
    assert "<h2>Data</h2>" in page and "60 rows in = 60 used + 0 rejected" in page
    # In MLflow the register stage re-renders it with the promotion decision.
    local = mlflow.artifacts.download_artifacts(run_id=pipeline_run["run_id"],
                                                artifact_path="evaluation/report.html",
                                                dst_path=str(tmp_path))
    logged = Path(local).read_text()
    assert "<h2>Promotion</h2>" in logged and "no champion yet" in logged


def test_served_model_matches_pipeline_predictions(pipeline_run):
    """The registered pyfunc, fed raw test inputs, predicts what evaluate predicted."""
    cfg = pipeline_run["cfg"]
    model = mlflow.pyfunc.load_model(f"models:/{cfg.model_name()}@champion")
    preds = pd.read_parquet(Path(pipeline_run["artifacts"]["evaluation"].path)
                            / "predictions.parquet")
    manifest = pd.read_csv(Path(cfg.data.path) / "manifest.csv").set_index("id")
    raw = manifest.loc[preds["id"]]
    images = [base64.b64encode((Path(cfg.data.path) / p).read_bytes()).decode()
              for p in raw["image"]]  # as a client sends them: bytes, not server paths
    out = model.predict(pd.DataFrame({"text": raw["text"].tolist(), "image": images}))
    assert out["label"].tolist() == preds["predicted"].tolist()
    prob_cols = [c for c in preds.columns if c.startswith("p_")]
    assert (out[prob_cols].to_numpy() - preds[prob_cols].to_numpy()).__abs__().max() < 1e-4


def test_failed_stage_marks_run_failed(pipeline_run, tmp_path, capsys):
    from crossfuse.errors import ERROR_MARK, UserError

    cfg = pipeline_run["cfg"].model_copy(deep=True)
    cfg.data.path = str(tmp_path / "missing")
    with pytest.raises(UserError, match="does not exist"):
        validate.python_func(config_json=cfg.to_json(),
                             validation=artifact(Artifact, tmp_path, "v"),
                             data_docs=artifact(HTML, tmp_path, "d"),
                             metrics=artifact(Metrics, tmp_path, "m"))
    # The task says the problem for the run's console, which shows it instead of a traceback.
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith(ERROR_MARK)]
    assert said and "does not exist; pass --data" in said[-1]
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(cfg.experiment_name()).experiment_id],
        order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"
    assert "does not exist" in runs[0].data.tags["crossfuse.error"]


@pytest.mark.slow
def test_mlflow_models_serve_answers_raw_inputs_over_http(pipeline_run, tmp_path):
    """`mlflow models serve` of the champion takes raw text + a base64 image over HTTP."""
    import base64
    import urllib.request

    cfg = pipeline_run["cfg"]
    port = free_port()
    with http_server([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                      f"models:/{cfg.model_name()}@champion", "--env-manager", "local",
                      "--host", "127.0.0.1", "--port", str(port)],
                     f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log",
                     env={"MLFLOW_TRACKING_URI": cfg.mlflow.tracking_uri}):
        preds = pd.read_parquet(Path(pipeline_run["artifacts"]["evaluation"].path)
                                / "predictions.parquet").head(3)
        manifest = pd.read_csv(Path(cfg.data.path) / "manifest.csv").set_index("id")
        rows = manifest.loc[preds["id"]]
        images = [base64.b64encode((Path(cfg.data.path) / p).read_bytes()).decode()
                  for p in rows["image"]]
        body = {"dataframe_split": {"columns": ["text", "image"],
                                    "data": [[t, i] for t, i in zip(rows["text"], images,
                                                                    strict=True)]}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())["predictions"]
        assert [a["label"] for a in answer] == preds["predicted"].tolist()
        assert all(abs(sum(v for k, v in a.items() if k.startswith("p_")) - 1) < 1e-4
                   for a in answer)

