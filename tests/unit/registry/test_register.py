"""The registry: aliases and audit tags through the gate, promotion by hand, the version list."""

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from crossfuse.config import RegistryConfig, load_config
from crossfuse.errors import UserError
from crossfuse.fusion import FusionSpec, build_fusion_head, save_fusion_head
from crossfuse.registry.register import list_versions, promote_by_hand, register
from crossfuse.registry.serving import RUN_CONFIG_FILE
from pipelines.cli import main


@pytest.fixture
def registry(tmp_path):
    """A real SQLite MLflow store with a saved model folder; registers versions by score."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registry-test")  # not the experiment id an earlier test left active
    model_dir = tmp_path / "model"
    save_fusion_head(build_fusion_head(FusionSpec("concat", {"text": 4}, 2, hidden_dim=8)),
                     model_dir, extra={"labels": ["a", "b"], "encoders": {}})
    (model_dir / RUN_CONFIG_FILE).write_text(load_config(None, env={}).to_json())

    def add(metrics: dict, gate: RegistryConfig = RegistryConfig()):
        with mlflow.start_run() as run:
            mlflow.log_metrics(metrics)
            return register(gate, "m", model_dir, metrics, run.info.run_id)

    add.uri, add.model_dir = uri, model_dir
    return add


def test_champion_moves_only_through_the_gate(registry):
    client = MlflowClient()
    results = [registry({"test_macro_f1": s, "test_ece_calibrated": e})
               for s, e in ((0.5, 0.05), (0.4, 0.05), (0.6, 0.20), (0.6, 0.05))]
    assert [(r.version, r.promoted, r.champion_version) for r in results] == [
        ("1", True, "1"), ("2", False, "1"), ("3", False, "1"), ("4", True, "4")]
    assert str(client.get_model_version_by_alias("m", "champion").version) == "4"
    assert str(client.get_model_version_by_alias("m", "challenger").version) == "4"
    v2 = client.get_model_version("m", "2")
    assert v2.tags["crossfuse.decision"] == "not promoted"
    assert v2.tags["crossfuse.reason"] == ("test_macro_f1 0.4000 does not beat champion v1's "
                                           "0.5000 (margin 0.0000)")
    assert v2.tags["crossfuse.metric.test_macro_f1"] == "0.4"  # exact: compared on the next run
    assert v2.tags["crossfuse.compared_to"] == "1" and v2.tags["crossfuse.decided_by"] == "pipeline"
    v3 = client.get_model_version("m", "3")  # better score, but calibration got much worse
    assert "calibrated ECE 0.2000 vs champion's 0.0500" in v3.tags["crossfuse.reason"]
    gate = {c["check"]: c for c in json.loads(v3.tags["crossfuse.gate"])}
    assert gate["test_macro_f1"]["passed"] and not gate["test_ece_calibrated"]["passed"]
    run_tags = client.get_run(v3.run_id).data.tags  # the run carries the decision too
    assert run_tags["crossfuse.decision"] == "not promoted"


def test_unknown_metric_registers_nothing(registry):
    with pytest.raises(UserError, match="registry.metric"):
        # A metric the evaluation could log (a class's F1) but did not, for this data.
        registry({"test_macro_f1": 0.5}, RegistryConfig(metric="test_f1_zebra"))
    assert MlflowClient().search_model_versions("name='m'") == []


def test_promote_by_hand_and_list(registry, capsys):
    for score in (0.5, 0.4):
        registry({"test_macro_f1": score})
    tags = promote_by_hand("m", "2", reason="v1 misroutes night images", user="ana")
    assert tags["crossfuse.compared_to"] == "1"
    client = MlflowClient()
    v2 = client.get_model_version_by_alias("m", "champion")
    assert str(v2.version) == "2"
    assert v2.tags["crossfuse.decision"] == "promoted by hand"
    assert (v2.tags["crossfuse.decided_by"], v2.tags["crossfuse.reason"]) == (
        "ana", "v1 misroutes night images")
    rows = list_versions("m")
    assert [(r["version"], r["aliases"], r["decision"]) for r in rows] == [
        (2, "challenger,champion", "promoted by hand"), (1, "", "promoted")]
    with pytest.raises(UserError, match="has no version '9'"):
        promote_by_hand("m", "9")

    # The same through the command line, against the same store.
    tracking = ["--set", f"mlflow.tracking_uri={registry.uri}"]
    assert main(["promote", "--model", "m", "--version", "1", "--reason", "rollback", *tracking]) == 0
    assert "m: champion -> v1 (was v2)" in capsys.readouterr().out
    assert main(["models", "--model", "m", *tracking]) == 0
    # Stripped: in the full suite an earlier KFP local run can leave print() indenting.
    out = [line.strip() for line in capsys.readouterr().out.splitlines()]
    at = out.index(f"store: {registry.uri}")  # the store it read, named
    assert out[at + 2].split()[:4] == ["m", "2", "challenger", "promoted"]
    assert "champion" in out[at + 4] and "rollback" in out[at + 5]
    assert main(["promote", "--model", "m", "--version", "7", *tracking]) == 2


def test_champion_and_challenger_are_compared_on_the_same_test_rows(registry, tmp_path):
    """With both runs' predictions logged, the gate asks a paired bootstrap, not two numbers."""
    import numpy as np
    import pandas as pd

    y = np.array(["a", "b"] * 50)

    def add_with_predictions(wrong: int, score: float):
        predicted = np.where(np.arange(100) < wrong, np.where(y == "a", "b", "a"), y)
        frame = pd.DataFrame({"id": [f"r{i}" for i in range(100)], "label": y, "predicted": predicted})
        with mlflow.start_run() as run:
            path = tmp_path / f"predictions-{run.info.run_id}" / "predictions.parquet"
            path.parent.mkdir()
            frame.to_parquet(path)
            mlflow.log_artifact(str(path), "evaluation")
            return register(RegistryConfig(), "m", tmp_path / "model", {"test_macro_f1": score},
                            run.info.run_id, predictions=frame)

    first = add_with_predictions(wrong=40, score=0.60)
    same = add_with_predictions(wrong=40, score=0.61)  # a hair better on paper, identical rows
    better = add_with_predictions(wrong=5, score=0.95)
    assert (first.promoted, same.promoted, better.promoted) == (True, False, True)
    assert "95% interval [+0.0000, +0.0000]" in same.reason and "does not clear" in same.reason
    assert "paired bootstrap of 100 test rows" in better.reason and "clears the margin" in better.reason
    tags = MlflowClient().get_model_version("m", better.version).tags
    assert tags["crossfuse.modalities"] == "text"


def test_a_first_fused_model_that_loses_to_one_modality_gets_no_champion_alias(registry):
    result = registry({"test_macro_f1": 0.9, "fusion_gain_macro_f1": -0.1})
    assert (result.version, result.promoted, result.champion_version) == ("1", False, "")
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("m", "challenger").version) == "1"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("m", "champion")
    tags = client.get_model_version("m", "1").tags
    assert tags["crossfuse.decision"] == "not promoted"
    assert tags["crossfuse.reason"].startswith("fusion lost to one modality alone")


def test_a_model_that_lost_a_class_is_never_promoted_unless_allowed(registry):
    from crossfuse.data.validation.report import CLASSES_LOST_TAG
    from crossfuse.registry.promotion import data_hold

    tags = {CLASSES_LOST_TAG: "square-day"}
    with mlflow.start_run() as run:
        first = register(RegistryConfig(), "m", registry.model_dir, {"test_macro_f1": 0.9},
                         run.info.run_id, data_tags=tags, hold=data_hold(tags, False))
    assert not first.promoted and first.champion_version == ""
    assert "classes lost from the training data: square-day" in first.reason
    version = MlflowClient().get_model_version("m", first.version)
    assert version.tags[CLASSES_LOST_TAG] == "square-day"
    assert not json.loads(version.tags["crossfuse.gate"])[-1]["passed"]
    assert data_hold(tags, allow_class_loss=True) is None and data_hold({}, False) is None
