"""End to end: the real KFP local runner runs the whole DAG, with the state of a cluster.

Run state lives on a real S3 API (moto's server on a loopback port, ``storage.root``) and
runs are tracked by a real ``mlflow server``; every task keeps its feature cache,
checkpoints and stage records in a fresh temporary folder of its own, removed when it
exits, as a pod starts with an empty disk. So what one task leaves for another, or for the
next run, can only come through the bucket.

- Run 1, cold: encodes every item, becomes champion.
- Run 2: the train task is SIGKILLed once auto's first candidate is on S3; KFP retries it
  in a new process with an empty disk, which takes the finished candidates from S3. The run
  encodes nothing (every vector comes from S3), scores the same as run 1, and does not take
  the champion alias.
- Run 3: the train task is killed with no retry left; the pipeline's exit handler marks the
  MLflow run FAILED (a killed task cannot).
- A run on bad data fails at validation, leaves its MLflow run FAILED, and moves no alias.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml
from conftest import S3_CREDENTIALS, build_config, mlflow_server, s3_server, top_level
from mlflow.tracking import MlflowClient

from crossfuse.tracking import run_metrics
from pipelines.cli import main
from pipelines.runner import run_local

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

BUCKET = "crossfuse-state"


def stage_processes(stage: str) -> list[psutil.Process]:
    """The running KFP tasks' own Python processes for ``stage`` (not their ``sh`` parents)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if "kfp.dsl.executor_main" in argv and argv[-2:] == ["--function_to_execute", stage]:
            found.append(proc)
    return found


def kill_train_when(ready, timeout: float = 300.0) -> None:
    """SIGKILL the train task's process once ``ready()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            procs = stage_processes("train")
            if procs:
                for proc in procs:
                    proc.kill()
                return
        time.sleep(0.05)
    pytest.fail("the train task wrote no candidate checkpoint in time")


def run_and_kill_train(cfg, bucket, log: Path) -> dict | Exception:
    """Run the pipeline in a thread (its tasks' output into ``log``) and kill its train task
    once a candidate is on S3."""
    outcome: list = []

    def run():
        with open(log, "w") as out, contextlib.redirect_stdout(out):
            try:
                outcome.append(run_local(cfg))
            except Exception as exc:  # the killed run's failure, asserted by the tests
                outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    kill_train_when(lambda: bool(bucket.glob(f"{BUCKET}/team/checkpoints/auto-*/*.pt")))
    thread.join()
    return outcome[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    import s3fs

    root = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as patch, s3_server(root, BUCKET) as endpoint, \
            mlflow_server(root) as tracking:
        for key, value in S3_CREDENTIALS.items():
            patch.setenv(key, value)
        bucket = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        # Two extract parts: the DAG fans out over dsl.ParallelFor and merges, as on a cluster.
        cfg = build_config(root, sample_dataset, tiny_text_model, tiny_image_model,
                           "train.epochs=20", "pipeline.extract_parts=2",
                           f"train.checkpoint_dir={root / 'checkpoints'}",
                           f"pipeline.stage_cache_dir={root / 'stages'}",
                           f"storage.root=s3://{BUCKET}/team",
                           f"storage.options={{endpoint_url: {endpoint}}}",
                           f"mlflow.tracking_uri={tracking}",
                           "pipeline.resources.train.retries=1",
                           "pipeline.resources.train.retry_backoff_seconds=1")
        mlflow.set_tracking_uri(tracking)
        first = run_local(cfg)
        # Runs 2 and 3 extract in one part: the fan-out is run 1's to show, and the parts do
        # not enter any key (records, features, checkpoints), so run 2 still resumes run 1's.
        again = cfg.model_copy(deep=True)
        again.pipeline.extract_parts = 1
        second = run_and_kill_train(again, bucket, root / "second.log")
        no_retry = again.model_copy(deep=True)
        no_retry.pipeline.resources["train"].retries = 0
        third = run_and_kill_train(no_retry, bucket, root / "third.log")
        yield {"root": root, "cfg": cfg, "first": first, "second": second, "third": third,
               "client": MlflowClient(), "bucket": bucket, "tracking": tracking}


def runs(env):
    client, cfg = env["client"], env["cfg"]
    exp = client.get_experiment_by_name(cfg.experiment_name())
    return top_level(client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]))


def get(base: str, endpoint: str, **params) -> dict:
    """One MLflow REST call, as any HTTP client would make it."""
    url = f"{base}{endpoint}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def test_pipeline_outputs_and_champion_decision(env):
    assert env["first"] == {"version": "1", "champion_version": "1", "promoted": True}
    assert env["second"] == {"version": "2", "champion_version": "1", "promoted": False}
    client, name = env["client"], env["cfg"].model_name()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    v2 = client.get_model_version_by_alias(name, "challenger")
    assert str(v2.version) == "2" and v2.tags["crossfuse.decision"] == "not promoted"


def test_one_finished_mlflow_run_per_pipeline_run(env):
    first, second = runs(env)[:2]
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


def test_second_run_reads_every_vector_from_s3_and_no_task_kept_state_on_local_disk(env):
    first, second = runs(env)[:2]
    assert run_metrics(first)["features_image_encoded"] == 60
    assert run_metrics(second)["features_image_encoded"] == 0
    assert run_metrics(second)["features_text_encoded"] == 0
    assert run_metrics(second)["features_text_cache_hits"] == 60
    assert second.data.params["validate.from_record"] == "True"  # stage records from S3 too
    said = (env["root"] / "second.log").read_text()
    encoded = [int(n) for n in re.findall(r"(\d+) encoded now", said)]
    assert len(encoded) == 2 and set(encoded) == {0}, said  # one line per modality, all 0
    bucket = env["bucket"]
    for kind in ("features", "stages"):
        assert bucket.glob(f"{BUCKET}/team/{kind}/**"), kind
    cfg = env["cfg"]
    for local in (cfg.extract.cache_dir, cfg.train.checkpoint_dir, cfg.pipeline.stage_cache_dir):
        assert not Path(local).exists(), local  # the configured local folders stay unused


def test_a_killed_train_task_is_retried_and_resumes_from_the_checkpoint_on_s3(env):
    second = runs(env)[1]
    assert env["second"] == {"version": "2", "champion_version": "1", "promoted": False}
    assert second.info.status == "FINISHED"
    assert run_metrics(second)["selection_resumed_candidates"] >= 1
    # Resumed, not refitted: the same choice and the same test score as the cold run.
    first = runs(env)[0]
    assert second.data.params["auto.winner"] == first.data.params["auto.winner"]
    assert run_metrics(second)["test_macro_f1"] == run_metrics(first)["test_macro_f1"]


def test_a_killed_task_without_retries_ends_its_run_failed_never_running(env):
    assert isinstance(env["third"], RuntimeError)
    third = runs(env)[2]
    assert third.info.status == "FAILED"
    assert "exit handler" in third.data.tags["crossfuse.error"]
    name = env["cfg"].model_name()
    assert str(env["client"].get_model_version_by_alias(name, "champion").version) == "1"


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


def test_batch_scoring_reads_the_training_vectors_from_s3_and_checks_drift(env, tmp_path):
    """On another machine (an empty working copy) the model's training vectors come from S3,
    so the embeddings are compared: the verdict is a real one, not 'not checked'."""
    from conftest import batch_config

    from crossfuse.batch.stages import run_batch_in_process

    cfg = batch_config(env["cfg"], Path(env["cfg"].data.path)).model_copy(deep=True)
    cfg.storage.work_dir = str(tmp_path / "empty-disk")
    result = run_batch_in_process(cfg, tmp_path / "scored")
    assert result.drift_checked and result.drift_verdict in ("none", "flagged"), result
    assert not Path(env["cfg"].extract.cache_dir).exists()


def test_extraction_parts_are_merged_into_one_feature_set(env):
    from crossfuse.features.store import read_feature_set

    first = runs(env)[0]
    assert first.data.params["extract.parts"] == "2"
    assert run_metrics(first)["features_image_encoded"] == 60  # the parts' counts, summed
    kfp_root = env["root"] / "kfp"
    merged = sorted(kfp_root.rglob("merge-features/features/index.parquet"))
    parts = sorted(kfp_root.rglob("extract/features/index.parquet"))
    # Three runs got there: run 1's two parts were merged; runs 2 and 3 had one part each,
    # whose feature set went to train as it was, with no merge task.
    assert len(merged) == 1 and len(parts) == 4
    fs = read_feature_set(merged[0].parent)
    assert len(fs.index) == 60 and fs.index["line"].is_monotonic_increasing
    assert sorted(len(read_feature_set(p.parent).index) for p in parts[:2]) == [30, 30]


# Over HTTP: what any client of the tracking server reads.

def test_run_metrics_and_tags_over_http(env):
    base, cfg = env["tracking"], env["cfg"]
    exp = get(base, "/api/2.0/mlflow/experiments/get-by-name",
              experiment_name=cfg.experiment_name())["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:")  # proxied by the server
    body = json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        runs = [r for r in json.loads(reply.read())["runs"]  # not auto's nested candidate runs
                if "mlflow.parentRunId" not in {t["key"] for t in r["data"]["tags"]}]
    first = min(runs, key=lambda r: r["info"]["start_time"])
    assert first["info"]["status"] == "FINISHED"
    metrics = {m["key"] for m in first["data"]["metrics"]}
    assert {"test/macro_f1", "preprocess/rows_in", "robustness/text_word_dropout_auc"} <= metrics
    tags = {t["key"]: t["value"] for t in first["data"]["tags"]}
    assert tags["crossfuse.decision"] == "promoted"


def test_artifacts_are_stored_by_the_server(env):
    base, cfg = env["tracking"], env["cfg"]
    version = get(base, "/api/2.0/mlflow/registered-models/alias", name=cfg.model_name(),
                  alias="champion")["model_version"]
    run_id = version["run_id"]
    listed = get(base, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path="evaluation")
    names = {f["path"] for f in listed["files"]}
    assert {"evaluation/report.html", "evaluation/metrics.json"} <= names
    with urllib.request.urlopen(f"{base}/get-artifact?path=evaluation/report.html&run_uuid="
                                f"{run_id}", timeout=30) as reply:
        assert b"<h2>Promotion</h2>" in reply.read()
    # The bytes live in the server's artifact store, not in the client's folders.
    assert any((env["root"] / "server-artifacts").rglob("report.html"))
    assert not (env["root"] / "mlartifacts").exists()


def test_registry_over_http(env):
    base, cfg = env["tracking"], env["cfg"]
    model = get(base, "/api/2.0/mlflow/registered-models/get", name=cfg.model_name())
    aliases = {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]}
    assert aliases == {"champion": "1", "challenger": "2"}
    version = get(base, "/api/2.0/mlflow/model-versions/get", name=cfg.model_name(), version="1")
    tags = {t["key"]: t["value"] for t in version["model_version"]["tags"]}
    assert tags["crossfuse.decided_by"] == "pipeline" and "no champion yet" in tags[
        "crossfuse.reason"]


def test_five_registrations_racing_over_http_end_with_one_best_champion(env, tmp_path):
    """The promotion lease serialises read-champion -> decide -> move-alias on a server too:
    five runs registering at once leave the best one champion, and every version's audit
    (what it was compared to, whether it was promoted) agrees with the order the lease gave."""
    import threading

    import mlflow
    from mlflow.tracking import MlflowClient

    from crossfuse.config import RegistryConfig
    from crossfuse.registry.register import register

    # the first run's trained model folder (KFP keeps each task's outputs)
    model_dir = next(p.parent for p in sorted((env["root"] / "kfp").rglob("fusion_spec.json"))
                     if p.parent.name == "model" and "baselines" not in p.parts)
    scores = [0.61, 0.83, 0.72, 0.55, 0.79]
    results, errors = {}, []

    def registering(score: float) -> None:
        try:
            with mlflow.start_run(experiment_id=experiment) as run:  # this thread's own run
                mlflow.log_metric("test_macro_f1", score)
                results[score] = register(RegistryConfig(bootstrap=0), "raced", model_dir,
                                          {"test_macro_f1": score}, run.info.run_id)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    mlflow.set_tracking_uri(env["tracking"])
    experiment = mlflow.set_experiment("race").experiment_id
    threads = [threading.Thread(target=registering, args=(s,)) for s in scores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    client = MlflowClient()
    champion = client.get_model_version_by_alias("raced", "champion")
    assert str(champion.version) == results[0.83].version  # the best, whatever the order
    # Replay the decisions in version order (the order the lease let them through): each
    # promoted version was compared with the champion before it, each other with the champion
    # of its time, and the last promoted one holds the alias.
    versions = sorted(client.search_model_versions("name='raced'"), key=lambda v: int(v.version))
    current, best = "", 0.0
    for v in versions:
        score = float(v.tags["crossfuse.metric.test_macro_f1"])
        assert v.tags["crossfuse.compared_to"] == current
        promoted = score > best
        assert v.tags["crossfuse.decision"] == ("promoted" if promoted else "not promoted")
        if promoted:
            current, best = str(v.version), score
    assert current == str(champion.version)
    assert [m.name for m in client.search_registered_models() if "lease" in m.name] == []
