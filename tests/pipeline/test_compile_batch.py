"""The batch pipeline's compiled IR: golden file, its four steps and the extract fan-out."""

from pathlib import Path

import yaml

from components.image import BASE_IMAGE
from pipelines.runner import COMPILED_BATCH, compile_pipeline


def test_compiled_batch_ir_matches_golden_file(tmp_path):
    """`make compile` regenerates pipelines/compiled/; run it after changing the DAG."""
    fresh = compile_pipeline(tmp_path / "ir.yaml", batch=True)
    assert fresh.read_text() == Path(COMPILED_BATCH).read_text(), (
        "pipelines/compiled/batch_predict.yaml is stale: run `make compile` and commit it")


def test_batch_ir_wires_validate_preprocess_extract_score():
    ir = yaml.safe_load(Path(COMPILED_BATCH).read_text())
    assert ir["pipelineInfo"]["name"] == "crossfuse-batch-predict"
    executors = ir["deploymentSpec"]["executors"]
    assert sorted(executors) == ["exec-batch-preprocess", "exec-batch-score",
                                 "exec-batch-validate", "exec-extract"]
    assert {e["container"]["image"] for e in executors.values()} == {BASE_IMAGE}
    tasks = ir["root"]["dag"]["tasks"]
    deps = {name: sorted(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps == {"batch-validate": [], "batch-preprocess": ["batch-validate"],
                    "for-loop-2": ["batch-preprocess"],
                    "batch-score": ["batch-validate", "for-loop-2"]}
    assert list(ir["root"]["inputDefinitions"]["parameters"]) == ["config_json"]
    assert ir["root"]["outputDefinitions"]["parameters"].keys() == {"result", "drift"}
    inner = ir["components"]["comp-for-loop-2"]["dag"]["tasks"]
    steps = [t for n, t in tasks.items() if n != "for-loop-2"] + [inner["extract"]]
    for task in steps:  # every step logs to the batch's MLflow run: never cached
        assert not task["cachingOptions"].get("enableCache", False)


def test_batch_extraction_fans_out_like_training(tmp_path):
    from crossfuse.config import load_config

    cfg = load_config(None, ["pipeline.extract_parts=3"], env={})
    ir = yaml.safe_load(compile_pipeline(tmp_path / "ir.yaml", cfg, batch=True).read_text())
    loop = ir["root"]["dag"]["tasks"]["for-loop-2"]
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"
    parts = ir["root"]["dag"]["tasks"]["batch-score"]["inputs"]["artifacts"]["parts"]
    assert parts["taskOutputArtifact"]["producerTask"] == "for-loop-2"
