"""The compiled IR: what a KFP cluster runs. Golden file + the properties that matter."""

from pathlib import Path

import yaml

from components.image import BASE_IMAGE
from pipelines.runner import COMPILED, compile_pipeline

# The default, pipeline.extract_parts=1: one extract task, whose feature set is the run's.
STAGES = ["validate", "preprocess", "extract", "train", "evaluate", "register"]
STEPS = [*STAGES, "close-run"]  # the exit handler's task, after the stages whatever happened
LOOP = "for-loop-3"  # the extraction's fan-out with pipeline.extract_parts > 1


def stage_tasks(ir: dict) -> dict:
    """The stages' tasks: the DAG inside the pipeline's exit handler."""
    return ir["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def test_compiled_ir_matches_golden_file(tmp_path):
    """`make compile` regenerates pipelines/compiled/; run it after changing the DAG."""
    fresh = compile_pipeline(tmp_path / "ir.yaml")
    assert fresh.read_text() == Path(COMPILED).read_text(), (
        "pipelines/compiled/multimodal_fusion.yaml is stale: run `make compile` and commit it")


def test_ir_wires_six_stages_in_the_crossfuse_image():
    ir = yaml.safe_load(Path(COMPILED).read_text())
    executors = ir["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STEPS)
    for spec in executors.values():
        assert spec["container"]["image"] == BASE_IMAGE
        # The image already holds kfp and crossfuse: nothing is pip-installed at run time.
        assert "pip install" not in " ".join(spec["container"]["command"])
    tasks = stage_tasks(ir)
    deps = {name: sorted(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps == {"validate": [], "preprocess": ["validate"],
                    "extract": ["preprocess"],
                    "train": ["extract", "validate"],
                    "evaluate": ["extract", "preprocess", "train", "validate"],
                    "register": ["evaluate", "train", "validate"]}
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert list(params) == ["config_json", "run_token"]
    # KFP returns no pipeline outputs from inside an exit handler: the registration is read
    # from the MLflow run the run_token names (pipelines.runner.run_local).
    assert "outputDefinitions" not in ir["root"]


def test_an_exit_handler_closes_the_mlflow_run_whatever_happened():
    """A task killed by the kernel cannot mark its run; close-run runs after all of them."""
    ir = yaml.safe_load(Path(COMPILED).read_text())
    root = ir["root"]["dag"]["tasks"]
    assert set(root) == {"close-run", "exit-handler-1"}
    closing = root["close-run"]
    assert closing["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert closing["inputs"]["parameters"]["status"] == {
        "taskFinalStatus": {"producerTask": "exit-handler-1"}}
    job = closing["inputs"]["parameters"]["kfp_run"]["runtimeValue"]["constant"]
    assert stage_tasks(ir)["validate"]["inputs"]["parameters"]["kfp_run"]["runtimeValue"][
        "constant"] == job == "{{$.pipeline_job_uuid}}"  # the MLflow run is tagged with it


def test_ir_carries_resources_retries_and_no_caching():
    ir = yaml.safe_load(Path(COMPILED).read_text())
    executors = ir["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]["resources"]
    assert (train["cpuRequest"], train["memoryRequest"], train["memoryLimit"]) == (2.0, 4.0, 8.0)
    assert executors["exec-register"]["container"]["resources"]["cpuRequest"] == 1.0
    tasks = stage_tasks(ir)
    for task in [tasks[n] for n in STAGES]:
        # Every step logs to the run's MLflow run: a cached step would silently skip that.
        assert not task["cachingOptions"].get("enableCache", False)
    assert tasks["extract"]["retryPolicy"]["maxRetryCount"] == 1


def test_extraction_fans_out_over_parallel_for_and_merges(tmp_path):
    from crossfuse.config import load_config

    default = stage_tasks(yaml.safe_load(Path(COMPILED).read_text()))
    # One part: the whole extraction in one task, no loop, no merge task to start.
    assert default["extract"]["inputs"]["parameters"]["parts"]["runtimeValue"]["constant"] == 1
    assert LOOP not in default and "merge-features" not in default
    cfg = load_config(None, ["pipeline.extract_parts=4"], env={})
    ir = yaml.safe_load(compile_pipeline(tmp_path / "ir.yaml", cfg).read_text())
    tasks = stage_tasks(ir)
    assert tasks[LOOP]["parameterIterator"]["items"]["raw"] == "[0, 1, 2, 3]"
    collected = tasks["merge-features"]["inputs"]["artifacts"]["parts"]
    assert collected["taskOutputArtifact"]["producerTask"] == LOOP
    assert tasks["train"]["dependentTasks"] == ["merge-features", "validate"]
    inner = ir["components"][f"comp-{LOOP}"]["dag"]["tasks"]
    assert inner["extract"]["retryPolicy"]["maxRetryCount"] == 1


def test_a_finetuning_train_task_reads_the_preprocessed_items(tmp_path):
    from crossfuse.config import load_config

    default = stage_tasks(yaml.safe_load(Path(COMPILED).read_text()))
    assert "dataset" not in default["train"]["inputs"]["artifacts"]  # vectors are enough
    cfg = load_config(None, ["fusion.finetune=lora:8", "fusion.method=concat"], env={})
    train = stage_tasks(yaml.safe_load(compile_pipeline(tmp_path / "ir.yaml", cfg).read_text()))["train"]
    dataset = train["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]
    assert dataset == {"producerTask": "preprocess", "outputArtifactKey": "dataset"}
    assert sorted(train["dependentTasks"]) == ["extract", "preprocess", "validate"]


def test_resources_come_from_the_config(tmp_path):
    from crossfuse.config import load_config

    cfg = load_config(None, ["pipeline.resources.train.accelerator_type=nvidia.com/gpu",
                             "pipeline.resources.train.accelerator_limit=1",
                             "pipeline.resources.train.memory_limit=32G",
                             "pipeline.caching=true"], env={})
    ir = yaml.safe_load(compile_pipeline(tmp_path / "gpu.yaml", cfg).read_text())
    train = ir["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "1" and train["memoryLimit"] == 32.0
    # The steps not configured keep their defaults.
    assert ir["deploymentSpec"]["executors"]["exec-extract"]["container"]["resources"][
        "cpuRequest"] == 2.0
    tasks = [t for n, t in stage_tasks(ir).items() if n != LOOP]
    assert all(t["cachingOptions"]["enableCache"] for t in tasks)


def test_placement_and_secrets_go_into_the_kubernetes_platform_spec(tmp_path):
    """Node selectors, tolerations and Secret env vars: the IR's second document (kfp-kubernetes)."""
    from crossfuse.config import load_config

    cfg = load_config(None, ['pipeline.resources.train.node_selector={"pool": "gpu"}',
                             'pipeline.resources.train.tolerations=[{"key": "nvidia.com/gpu", '
                             '"operator": "Exists", "effect": "NoSchedule"}]',
                             'pipeline.secret_env={"dvc-remote": {"key_id": "AWS_ACCESS_KEY_ID"}}'],
                      env={})
    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "ir.yaml", cfg).read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}" for s in STEPS}  # every step gets the Secret
    train = executors["exec-train"]
    assert train["nodeSelector"] == {"labels": {"pool": "gpu"}}
    assert train["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                     "effect": "NoSchedule"}]
    assert "nodeSelector" not in executors["exec-extract"]  # only where the config says
    for executor in executors.values():
        (secret,) = executor["secretAsEnv"]
        assert secret["secretName"] == "dvc-remote"
        assert secret["keyToEnv"] == [{"secretKey": "key_id", "envVar": "AWS_ACCESS_KEY_ID"}]


def test_the_default_ir_has_no_platform_spec():
    """Nothing cluster-specific unless the config asks: the golden IR is one document."""
    assert len(list(yaml.safe_load_all(Path(COMPILED).read_text()))) == 1
