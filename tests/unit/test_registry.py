"""Champion/challenger: the decision rule, and aliases + tags in a real MLflow registry."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from crossfuse.config import load_config
from crossfuse.fusion import FusionSpec, build_fusion_head, save_fusion_head
from crossfuse.registry import decide_promotion, register
from crossfuse.serving import RUN_CONFIG_FILE


@pytest.mark.parametrize("score, champion, promote, words", [
    (0.80, None, True, "no champion yet"),
    (0.91, (0.88, "3"), True, "beats champion v3's 0.8800"),
    (0.88, (0.88, "3"), False, "does not beat champion v3's 0.8800"),
    (0.70, (0.88, "3"), False, "does not beat"),
])
def test_decide_promotion(score, champion, promote, words):
    d = decide_promotion("test_macro_f1", score, champion)
    assert d.promote is promote and words in d.reason


def test_register_moves_champion_only_on_improvement(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("registry-test")  # not the experiment id an earlier test left active
    model_dir = tmp_path / "model"
    save_fusion_head(build_fusion_head(FusionSpec("concat", {"text": 4}, 2, hidden_dim=8)),
                     model_dir, extra={"labels": ["a", "b"], "encoders": {}})
    (model_dir / RUN_CONFIG_FILE).write_text(load_config(None, env={}).to_json())
    client = MlflowClient()
    results = []
    for score in (0.5, 0.4, 0.6):
        with mlflow.start_run() as run:
            results.append(register("m", model_dir, "test_macro_f1", score, run.info.run_id))
    assert [(r.version, r.promoted, r.champion_version) for r in results] == [
        ("1", True, "1"), ("2", False, "1"), ("3", True, "3")]
    assert str(client.get_model_version_by_alias("m", "champion").version) == "3"
    assert str(client.get_model_version_by_alias("m", "challenger").version) == "3"
    v2 = client.get_model_version("m", "2")
    assert v2.tags["crossfuse.decision"] == "not promoted"
    assert v2.tags["crossfuse.reason"] == "test_macro_f1 0.4000 does not beat champion v1's 0.5000"
    assert v2.tags["crossfuse.metric.test_macro_f1"] == "0.4"  # exact: compared on the next run
