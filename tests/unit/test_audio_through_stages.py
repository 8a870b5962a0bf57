"""Audio through every stage: image + audio, and three modalities at once.

The generated dataset's audio is a tone whose pitch says the time of day (as the caption
does) and its image says the shape, so image + audio needs fusion to tell the six classes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import build_config, run_stages

from crossfuse.data.preprocess import preprocess
from crossfuse.data.sample import generate_sample_dataset
from crossfuse.data.validation import validate
from crossfuse.features.store import read_feature_set
from crossfuse.registry.serving import FusionPredictor
from crossfuse.registry.serving_profile import measure_serving, profile_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def av_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("av") / "av"
    generate_sample_dataset(root, per_class=20, audio=True)
    return root


def test_bad_audio_rows_are_rejected_by_line_and_counted(av_data, tmp_path, tiny_text_model,
                                                         tiny_image_model):
    data = tmp_path / "bad"
    shutil.copytree(av_data, data)
    (data / "audio" / "s00003.wav").write_bytes(b"")
    sf.write(data / "audio" / "s00007.wav", np.zeros(4000), 8000)
    cfg = build_config(tmp_path, data, tiny_text_model, tiny_image_model,
                       "extract.encoders={image: efficientnet-lite0, audio: logmel}",
                       "validation.on_error=drop")
    report = validate(cfg, data, tmp_path / "v")
    rejected = {(i.line, i.id, i.column, i.kind) for i in report.issues}
    assert rejected == {(5, "s00003", "audio", "audio empty"), (9, "s00007", "audio", "audio silent")}
    assert report.n_rows == 120 == report.n_valid + report.n_rejected and report.n_rejected == 2
    rejects = pd.read_csv(tmp_path / "v" / "rejects.csv")
    assert sorted(rejects["line"]) == [5, 9]


def test_image_and_audio_through_every_stage(av_data, tmp_path, tiny_text_model, tiny_image_model):
    cfg = build_config(tmp_path, av_data, tiny_text_model, tiny_image_model,
                       f"extract.encoders={{image: hf:{tiny_image_model}, audio: logmel}}",
                       "fusion.method=concat", "evaluate.efficiency_samples=8")
    _, result = run_stages(cfg, tmp_path)
    fs = read_feature_set(tmp_path / "features")
    assert {m: v.shape[1] for m, v in fs.vectors.items()} == {"image": 32, "audio": 256}
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert {"baseline_audio_test_macro_f1", "baseline_image_test_macro_f1",
            "present_audio_test_macro_f1", "robustness_audio_snr_noise_auc",
            "robustness_audio_features_auc", "importance_drop_audio"} <= set(metrics)
    curves = pd.read_csv(tmp_path / "evaluation" / "robustness.csv")
    snr = curves[curves["kind"] == "snr_noise"]
    # Level 0 is the clean audio, re-read from the preprocessed files: the test score itself.
    assert len(snr) == 11 and snr["macro_f1"].iloc[0] == pytest.approx(metrics["test_macro_f1"])
    # Preprocessing wrote mono float32 waveforms at the encoder's 16 kHz, preprocess.audio_seconds
    # (2 s) long, as bytes that do not change between runs: the feature cache finds them again.
    files = sorted((tmp_path / "pre" / "audio").glob("shard-*.npy"))
    waves = np.load(files[0])
    assert waves.dtype == np.float32 and waves.shape[1:] == (2 * 16000,)
    first = [f.read_bytes() for f in files]
    preprocess(cfg, av_data, tmp_path / "pre-again")
    assert [f.read_bytes() for f in sorted((tmp_path / "pre-again" / "audio").glob("shard-*.npy"))
            ] == first
    assert result.version == "1"
    # The promoted model was timed as served on raw requests (base64 PNG and WAV, as a client
    # sends them), and the logged input example is one of them, which the model answers.
    assert result.promoted and result.serving["samples"] == 8
    assert result.serving["raw_ms_per_sample_batched"] > 0 and not result.serving["from_cache"]
    # The same model files and requests again (a retried register): the kept profile, no
    # new process; one changed byte of the model is another model.
    requests = pd.read_parquet(tmp_path / "evaluation" / "serving_inputs.parquet")
    again = measure_serving(tmp_path / "model", requests, Path(cfg.pipeline.stage_cache_dir))
    assert again == {**result.serving, "from_cache": True}
    changed = shutil.copytree(tmp_path / "model", tmp_path / "model-changed")
    (changed / "extra.txt").write_text("one more file")
    assert profile_key(changed, requests) != profile_key(tmp_path / "model", requests)
    example = json.loads((tmp_path / "evaluation" / "request_example.json").read_text())
    assert set(example) == {"image", "audio"}
    answer = FusionPredictor(tmp_path / "model").predict(pd.DataFrame([example]))
    assert answer["label"].iloc[0] in set(pd.read_csv(av_data / "manifest.csv")["label"])


def three_modalities(tmp_path, data, text_model, image_model, *overrides):
    cfg = build_config(tmp_path, data, text_model, image_model,
                       f"extract.encoders={{image: hf:{image_model}, text: hf:{text_model}, "
                       f"audio: logmel}}", "evaluate.efficiency=false",
                       "evaluate.robustness.raw=false", *overrides)
    run_stages(cfg, tmp_path)
    return tmp_path / "evaluation"


@pytest.mark.parametrize("method", ["gmu", "tensor"])
def test_three_modalities_fuse_and_score_every_subset(av_data, tmp_path, tiny_text_model,
                                                      tiny_image_model, method):
    evaluation = three_modalities(tmp_path, av_data, tiny_text_model, tiny_image_model,
                                  f"fusion.method={method}")
    subsets = pd.read_csv(evaluation / "modality_subsets.csv")
    assert len(subsets) == 7  # every non-empty subset of three modalities
    assert subsets["subset"].iloc[-1] == "image+text+audio"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert {f"baseline_{m}_test_macro_f1" for m in ("image", "text", "audio")} <= set(metrics)


def test_auto_weighs_each_of_three_modalities_alone_and_fused(av_data, tmp_path, tiny_text_model,
                                                              tiny_image_model):
    evaluation = three_modalities(tmp_path, av_data, tiny_text_model, tiny_image_model,
                                  "fusion.method=auto", "fusion.auto.candidates=[late, gmu]",
                                  "fusion.auto.race=false")  # both networks cross-fitted
    choice = pd.read_csv(evaluation / "model_choice.csv")
    assert {"unimodal:audio", "unimodal:text", "unimodal:image", "late", "gmu"} <= set(
        choice["candidate"])
