"""Two pipeline runs at once on one machine, sharing the MLflow store and the feature cache.

Each run is one process running every stage (:func:`crossfuse.stages.run_in_process`, the
code every KFP task calls): what is under test is two runs racing for one SQLite store, one
feature cache and one champion alias; the KFP local runner is covered by test_local_run.py.
"""

import os
import subprocess
import sys

import mlflow
import pytest
from conftest import build_config, top_level
from mlflow.tracking import MlflowClient

from crossfuse.tracking import run_metrics

pytestmark = pytest.mark.pipeline  # every stage, twice: skipped by make test-fast

RUN = ("import sys; from pathlib import Path; from crossfuse.config import RunConfig; "
       "from crossfuse.stages import run_in_process; "
       "run_in_process(RunConfig.from_json(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    root = tmp_path_factory.mktemp("concurrent")
    cfg = build_config(root, sample_dataset, tiny_text_model, tiny_image_model, "train.epochs=5",
                       "evaluate.unimodal_baselines=false", "evaluate.robustness.raw=false",
                       "evaluate.efficiency=false", name="concurrent")
    config_file = root / "run.json"
    config_file.write_text(cfg.to_json())
    # mlflow.set_tracking_uri in earlier tests exported MLFLOW_TRACKING_URI: give the children
    # this store explicitly.
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.mlflow.tracking_uri}
    procs = [subprocess.Popen([sys.executable, "-c", RUN, str(config_file), str(root / f"run-{i}")],
                              cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return {"cfg": cfg, "codes": [p.returncode for p in procs], "outputs": outputs}


def test_both_finish_and_register(two_runs):
    assert two_runs["codes"] == [0, 0], "\n".join(o[-3000:] for o in two_runs["outputs"])
    client, cfg = MlflowClient(), two_runs["cfg"]
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = top_level(client.search_runs([exp.experiment_id]))
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    for run in runs:  # each run holds its own complete record
        assert run.data.tags["crossfuse.stage.register"] == "done"
        assert run_metrics(run)["rows_in"] == run_metrics(run)["rows_used"] == 60
    versions = client.search_model_versions(f"name='{cfg.model_name()}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs}
    # The gate ran one at a time: the first registered is champion, the second (same score)
    # was compared with it and not promoted.
    decisions = {str(v.version): v.tags["crossfuse.decision"] for v in versions}
    assert decisions == {"1": "promoted", "2": "not promoted"}
    champion = client.get_model_version_by_alias(cfg.model_name(), "champion")
    assert str(champion.version) == "1"


def test_shared_cache_gives_both_the_same_features(two_runs):
    client, cfg = MlflowClient(), two_runs["cfg"]
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = top_level(client.search_runs([exp.experiment_id]))
    a, b = (run_metrics(r) for r in runs)
    # Whoever encoded an item, both read the same vectors: same data, config, seed, result.
    for name in ("test_macro_f1", "test_log_loss", "best_val_macro_f1"):
        assert a[name] == b[name]
