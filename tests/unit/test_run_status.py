"""Run statuses that tell the truth: a failed run stays failed, a killed task's run is ended.

Against a real SQLite MLflow store.
"""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from crossfuse.config import load_config
from crossfuse.run_status import FAILED_TAG, HEARTBEAT_TAG
from crossfuse.tracking import KFP_RUN_TAG, close_pipeline_run, stage_run
from pipelines.cli import main


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                              f"mlflow.artifact_root={tmp_path / 'art'}", "data.name=status",
                              "storage.heartbeat_seconds=0.05"], env={})


def fail_as_a_sibling_task(run_id: str) -> None:
    """What a failing task's stage_run does: the tag, then the status."""
    client = MlflowClient()
    client.set_tag(run_id, FAILED_TAG, "extract-1")
    client.set_terminated(run_id, "FAILED")


def test_a_stage_finishing_after_its_sibling_failed_leaves_the_run_failed(cfg):
    with stage_run(cfg, None, "validate") as run:
        run_id = run.info.run_id
    with stage_run(cfg, run_id, "extract-0"):
        fail_as_a_sibling_task(run_id)  # the sibling part fails while this one still works
    assert MlflowClient().get_run(run_id).info.status == "FAILED"
    with stage_run(cfg, run_id, "merge_features"):  # a later stage cannot revive it either
        pass
    assert MlflowClient().get_run(run_id).info.status == "FAILED"


def test_a_stage_that_failed_and_succeeded_on_its_retry_leaves_the_run_running(cfg):
    with stage_run(cfg, None, "validate") as run:
        run_id = run.info.run_id
    with pytest.raises(OSError), stage_run(cfg, run_id, "extract-1"):
        raise OSError("node lost")  # KFP retries the task
    assert MlflowClient().get_run(run_id).info.status == "FAILED"
    with stage_run(cfg, run_id, "extract-1"):  # the retry
        pass
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "RUNNING" and FAILED_TAG not in run.data.tags
    assert "crossfuse.error" not in run.data.tags
    assert "node lost" in run.data.tags["crossfuse.retried"]


def test_a_running_stage_stamps_its_heartbeat(cfg):
    with stage_run(cfg, None, "train") as run:
        first = float(MlflowClient().get_run(run.info.run_id).data.tags[HEARTBEAT_TAG])
        time.sleep(1.2)
        later = float(MlflowClient().get_run(run.info.run_id).data.tags[HEARTBEAT_TAG])
    assert later > first  # stamped again while the stage ran (whole seconds)
    assert MlflowClient().get_run(run.info.run_id).info.status == "RUNNING"


def test_runs_gc_marks_runs_without_a_heartbeat_killed(cfg, tmp_path, capsys):
    with stage_run(cfg, None, "train") as run:
        dead = run.info.run_id
    with stage_run(cfg, None, "train") as run:
        alive = run.info.run_id
    client = MlflowClient()
    client.set_tag(dead, HEARTBEAT_TAG, str(int(time.time()) - 3600))  # killed an hour ago
    store = ["--set", f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}"]
    assert main(["runs", "gc", "--stale-minutes", "30", "--dry-run", *store]) == 0
    assert client.get_run(dead).info.status == "RUNNING"  # a dry run changes nothing
    assert f"would mark KILLED: run {dead}" in capsys.readouterr().out
    assert main(["runs", "gc", "--stale-minutes", "30", *store]) == 0
    assert "1 stale RUNNING run in" in capsys.readouterr().out
    ended = client.get_run(dead)
    assert ended.info.status == "KILLED" and "no heartbeat for over 30 min" in ended.data.tags[
        "crossfuse.error"]
    assert client.get_run(alive).info.status == "RUNNING"
    with stage_run(cfg, dead, "evaluate"):  # a task that was only slow cannot revive it
        pass
    assert client.get_run(dead).info.status in ("FAILED", "KILLED")


def test_the_exit_handler_fails_a_run_its_killed_task_left_running(cfg):
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    with stage_run(cfg, None, "validate", tags={KFP_RUN_TAG: "job-1"}) as run:
        run_id = run.info.run_id
    assert close_pipeline_run(cfg, "job-1", "SUCCEEDED") == []
    assert close_pipeline_run(cfg, "job-2", "FAILED") == []  # another KFP run's
    assert close_pipeline_run(cfg, "job-1", "FAILED", "train: OOMKilled") == [run_id]
    ended = MlflowClient().get_run(run_id)
    assert ended.info.status == "FAILED"
    assert "train: OOMKilled" in ended.data.tags["crossfuse.error"]
    assert close_pipeline_run(cfg, "job-1", "FAILED") == []  # already ended: left as it is
