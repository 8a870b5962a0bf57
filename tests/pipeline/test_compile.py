"""The compiled IR: what a KFP cluster runs. Golden file + the properties that matter."""

from pathlib import Path

import yaml

from components.image import BASE_IMAGE
from pipelines.runner import COMPILED, compile_pipeline

STAGES = ["validate", "preprocess", "extract", "train", "evaluate", "register"]


def test_compiled_ir_matches_golden_file(tmp_path):
    """`make compile` regenerates pipelines/compiled/; run it after changing the DAG."""
    fresh = compile_pipeline(tmp_path / "ir.yaml")
    assert fresh.read_text() == Path(COMPILED).read_text(), (
        "pipelines/compiled/multimodal_fusion.yaml is stale: run `make compile` and commit it")


def test_ir_wires_six_stages_in_the_crossfuse_image():
    ir = yaml.safe_load(Path(COMPILED).read_text())
    executors = ir["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STAGES)
    for spec in executors.values():
        assert spec["container"]["image"] == BASE_IMAGE
        # The image already holds kfp and crossfuse: nothing is pip-installed at run time.
        assert "pip install" not in " ".join(spec["container"]["command"])
    tasks = ir["root"]["dag"]["tasks"]
    deps = {name: sorted(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps == {"validate": [], "preprocess": ["validate"], "extract": ["preprocess", "validate"],
                    "train": ["extract", "validate"],
                    "evaluate": ["extract", "preprocess", "train", "validate"],
                    "register": ["evaluate", "train", "validate"]}
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert list(params) == ["config_json"]
    assert ir["root"]["outputDefinitions"]["parameters"].keys() == {
        "version", "champion_version", "promoted"}
