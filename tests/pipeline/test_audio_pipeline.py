"""End to end with audio: every stage on a generated image + audio dataset, registered in a real
MLflow registry, then the registered model answering a request with a base64 WAV.

The stages run in this process (:func:`crossfuse.stages.run_in_process`, what each KFP task
calls); the components pass folders whatever their modalities, and the KFP local runner itself
is covered by ``test_local_run.py``.
"""

from __future__ import annotations

import base64

import mlflow
import pandas as pd
import pytest
from conftest import build_config, run_stages
from mlflow.tracking import MlflowClient

from crossfuse.data.sample import generate_sample_dataset
from crossfuse.tracking import run_metrics

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]


def test_image_and_audio_pipeline_registers_a_model_that_hears(tmp_path, tiny_text_model,
                                                                 tiny_image_model):
    data = tmp_path / "av"
    generate_sample_dataset(data, per_class=10, audio=True)
    cfg = build_config(tmp_path, data, tiny_text_model, tiny_image_model,
                       f"extract.encoders={{image: hf:{tiny_image_model}, audio: logmel}}",
                       "fusion.method=concat", "train.epochs=20",
                       "train.modality_dropout={image: 0.3, audio: 0.3}",
                       "evaluate.efficiency=false", name="av")
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    _, result = run_stages(cfg, tmp_path / "stages")
    assert result.version == "1"
    client = MlflowClient()
    version = client.get_model_version(cfg.model_name(), "1")
    metrics = run_metrics(client.get_run(version.run_id))
    assert {"baseline_audio_test_macro_f1", "robustness_audio_snr_noise_auc",
            "present_audio_test_macro_f1", "rows_used"} <= set(metrics)
    assert metrics["rows_used"] == 60
    model = mlflow.pyfunc.load_model(f"models:/{cfg.model_name()}/1")
    wav = base64.b64encode((data / "audio" / "s00001.wav").read_bytes()).decode()
    png = base64.b64encode((data / "images" / "s00001.png").read_bytes()).decode()
    answer = model.predict(pd.DataFrame({"image": [png, None], "audio": [wav, wav]}))
    labels = pd.read_csv(data / "manifest.csv")["label"].unique()
    assert answer["label"].isin(labels).all() and len(answer) == 2
