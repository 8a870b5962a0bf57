"""The pipeline's stages against a real `mlflow server` (SQLite backend, proxied artifacts)
over HTTP.

The stages run in this process (:func:`crossfuse.stages.run_in_process`, the code each KFP
task calls): what is under test is the tracking and registry traffic over HTTP; the KFP
local runner itself is covered by ``test_local_run.py``.
"""

import json
import urllib.parse
import urllib.request

import pytest
from conftest import build_config, mlflow_server, run_stages

pytestmark = pytest.mark.pipeline  # runs the whole DAG: skipped by make test-fast


def get(base: str, endpoint: str, **params) -> dict:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def server_run(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    root = tmp_path_factory.mktemp("server")
    with mlflow_server(root) as base:
        # The same pipeline code, pointed at the server (as MLFLOW_TRACKING_URI would).
        cfg = build_config(root, sample_dataset, tiny_text_model, tiny_image_model,
                           "train.epochs=10", f"mlflow.tracking_uri={base}",
                           "evaluate.unimodal_baselines=false", "evaluate.efficiency=false",
                           name="served")
        _, result = run_stages(cfg, root / "stages")
        outputs = {"version": result.version, "champion_version": result.champion_version,
                   "promoted": result.promoted}
        yield {"base": base, "cfg": cfg, "outputs": outputs, "root": root}


def test_run_metrics_and_tags_over_http(server_run):
    base, cfg = server_run["base"], server_run["cfg"]
    exp = get(base, "/api/2.0/mlflow/experiments/get-by-name",
              experiment_name=cfg.experiment_name())["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:")  # proxied by the server
    body = json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        runs = [r for r in json.loads(reply.read())["runs"]  # not auto's nested candidate runs
                if "mlflow.parentRunId" not in {t["key"] for t in r["data"]["tags"]}]
    assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED"
    metrics = {m["key"] for m in runs[0]["data"]["metrics"]}
    assert {"test/macro_f1", "preprocess/rows_in", "robustness/text_word_dropout_auc"} <= metrics
    tags = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
    assert tags["crossfuse.decision"] == "promoted"


def test_artifacts_are_stored_by_the_server(server_run):
    base, cfg = server_run["base"], server_run["cfg"]
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
    assert any((server_run["root"] / "server-artifacts").rglob("report.html"))
    assert not (server_run["root"] / "mlartifacts").exists()


def test_registry_over_http(server_run):
    base, cfg = server_run["base"], server_run["cfg"]
    assert server_run["outputs"] == {"version": "1", "champion_version": "1", "promoted": True}
    model = get(base, "/api/2.0/mlflow/registered-models/get", name=cfg.model_name())
    aliases = {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]}
    assert aliases == {"champion": "1", "challenger": "1"}
    version = get(base, "/api/2.0/mlflow/model-versions/get", name=cfg.model_name(), version="1")
    tags = {t["key"]: t["value"] for t in version["model_version"]["tags"]}
    assert tags["crossfuse.decided_by"] == "pipeline" and "no champion yet" in tags[
        "crossfuse.reason"]


def test_five_registrations_racing_over_http_end_with_one_best_champion(server_run, tmp_path):
    """The promotion lease serialises read-champion -> decide -> move-alias on a server too:
    five runs registering at once leave the best one champion, and every version's audit
    (what it was compared to, whether it was promoted) agrees with the order the lease gave."""
    import threading

    import mlflow
    from mlflow.tracking import MlflowClient

    from crossfuse.config import RegistryConfig
    from crossfuse.registry.register import register

    model_dir = server_run["root"] / "stages" / "model"  # the pipeline's trained model
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

    mlflow.set_tracking_uri(server_run["base"])
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
