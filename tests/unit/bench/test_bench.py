"""The benchmark command on a tiny dataset: JSON rows, markdown table, MLflow runs, search."""

import json

import mlflow
from mlflow.tracking import MlflowClient

from crossfuse.bench.fusion import markdown_table, summarise
from pipelines.cli import main


def test_bench_fusion_command(sample_dataset, tiny_text_model, tiny_image_model, tmp_path,
                              capsys):
    out = tmp_path / "results.json"
    code = main(["bench", "fusion", "--data", str(sample_dataset), "--seeds", "2", "--trials", "2",
                 "--search-epochs", "5", "--methods", "concat,gmu", "--out", str(out),
                 "--set", f"extract.encoders.text=hf:{tiny_text_model}",
                 "--set", f"extract.encoders.image=hf:{tiny_image_model}",
                 "--set", f"extract.cache_dir={tmp_path / 'cache'}",
                 "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 "--set", f"mlflow.artifact_root={tmp_path / 'art'}",
                 "--set", "preprocess.image_size=32", "--set", "train.epochs=10"])
    assert code == 0
    rows = json.loads(out.read_text())
    methods = ["concat", "gmu", "unimodal:image", "unimodal:text"]
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for m in methods for s in (0, 1)]
    for r in rows:
        assert set(r) >= {"method", "seed", "test_accuracy", "test_macro_f1", "params",
                          "train_seconds", "infer_ms_per_sample", "hyperparameters"}
        assert 0 <= r["test_macro_f1"] <= 1 and r["params"] > 0
        assert {"lr", "dropout", "hidden_dim", "weight_decay"} <= set(r["hyperparameters"])
    # Tuned once per method: both seeds share the hyper-parameters.
    assert rows[0]["hyperparameters"] == rows[1]["hyperparameters"]
    table = out.with_suffix(".md").read_text()
    assert table.splitlines()[0].startswith("| method | test macro-F1")
    assert len(table.strip().splitlines()) == 2 + len(methods)
    assert "wrote" in capsys.readouterr().out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = MlflowClient().get_experiment_by_name("bench-sample")
    assert len(MlflowClient().search_runs([exp.experiment_id])) == len(rows)


def test_summary_is_mean_and_std_over_seeds():
    rows = [{"method": "a", "seed": s, "test_macro_f1": v, "test_accuracy": v, "params": 10,
             "train_seconds": 1.0, "infer_ms_per_sample": 0.1} for s, v in enumerate((0.8, 0.9))]
    rows.append({**rows[0], "method": "b", "test_macro_f1": 0.95})
    s = summarise(rows)
    assert [x["method"] for x in s] == ["b", "a"]
    assert abs(s[1]["test_macro_f1"] - 0.85) < 1e-12 and abs(s[1]["test_macro_f1_std"] - 0.0707) < 1e-3
    assert "| a | 0.850 ± 0.071 |" in markdown_table(rows)


def test_bench_encoders_command(sample_dataset, tiny_text_model, tiny_image_model, tmp_path,
                                capsys):
    out = tmp_path / "encoders.json"
    code = main(["bench", "encoders", "--data", str(sample_dataset), "--device", "cpu",
                 "--limit", "20", "--batch-size", "8", "--out", str(out),
                 "--set", f"extract.encoders.text=hf:{tiny_text_model}",
                 "--set", f"extract.encoders.image=hf:{tiny_image_model}",
                 "--set", "preprocess.image_size=32"])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [(r["modality"], r["device"], r["items"], r["batch_size"]) for r in rows] == [
        ("image", "cpu", 20, 8), ("text", "cpu", 20, 8)]
    assert all(r["items_per_s"] > 0 and r["ms_per_item"] > 0 for r in rows)
    assert rows[0]["encoder"] == f"hf:{tiny_image_model}"
    table = capsys.readouterr().out
    assert ("| modality | encoder | device | backend | batch_size | items | items_per_s | "
            "ms_per_item |") in table
    assert {r["backend"] for r in rows} == {"torch"}  # hf: encoders have no ONNX export


def test_bench_extraction_measures_the_stage_per_runtime(sample_dataset, tiny_text_model,
                                                         tiny_image_model, tmp_path, capsys):
    out = tmp_path / "extraction.json"
    code = main(["bench", "extraction", "--data", str(sample_dataset),
                 "--setups", "cpu:onnxruntime,cpu:torch", "--out", str(out),
                 "--set", f"extract.encoders.text=hf:{tiny_text_model}",
                 "--set", f"extract.encoders.image=hf:{tiny_image_model}",
                 "--set", "preprocess.image_size=32"])
    assert code == 0
    result = json.loads(out.read_text())
    # hf: encoders have no ONNX export: their onnxruntime rows are left out, not faked. The
    # images are also read from the older layout, one PNG each (decoded), on the last setup.
    assert [(r["modality"], r["runtime"]) for r in result["rows"]] == [
        ("image", "torch on cpu"), ("image", "torch on cpu, from per-image PNGs"),
        ("text", "torch on cpu")]
    assert result["rows"][0]["items"] == result["rows"][1]["items"] == 60
    assert result["layout"] == "mapped shards"
    assert all(r["items_per_s"] > 0 for r in result["rows"]) and "cores" in result["machine"]
