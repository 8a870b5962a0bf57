"""fusion.method=auto end to end through the stages, on data where fusion cannot help.

The generated dataset's label is the time of day, which only the caption says; every image
is pure noise. auto must register the text-only model as champion and say that fusion did
not help; an explicit fused method must be refused by the gate for losing to text alone.
"""

from __future__ import annotations

import csv
import json

import mlflow
import numpy as np
import pytest
from conftest import run_stages
from markupsafe import escape
from mlflow.tracking import MlflowClient
from PIL import Image

from crossfuse.config import load_config
from crossfuse.data.sample import _caption
from crossfuse.tracking import run_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def noise_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise") / "data"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):
        time = ("day", "night")[i % 2]
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"n{i:03d}.png")
        rows.append({"id": f"n{i:03d}", "image": f"images/n{i:03d}.png",
                     "text": _caption(rng, time), "label": time})
    # One sample twice under another id: the split keeps the copies together, so validation
    # passes with a warning, which the run, the report and the version must carry.
    (root / "images" / "copy.png").write_bytes((root / "images" / "n000.png").read_bytes())
    rows.append({**rows[0], "id": "copy-of-n000", "image": "images/copy.png"})
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def run_auto(root, data, *overrides):
    cfg = load_config(None, [f"data.path={data}", "data.name=noise", "fusion.auto.folds=3",
                             "fusion.auto.trials=2",
                             f"extract.cache_dir={root.parent / 'cache'}",
                             f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                             f"mlflow.artifact_root={root / 'mlartifacts'}",
                             f"train.checkpoint_dir={root / 'ckpt'}", "evaluate.efficiency=false",
                             "evaluate.robustness.raw=false", *overrides], env={}).resolved(root)
    run_id, result = run_stages(cfg, root)
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return cfg, run_id, result


def test_auto_registers_the_text_model_and_says_fusion_did_not_help(noise_images, tmp_path, capsys):
    cfg, run_id, result = run_auto(tmp_path, noise_images)
    out = capsys.readouterr().out
    assert "fusion did not help on this data" in out and "the model is text-only" in out
    assert result.promoted and result.champion_version == result.version
    client = MlflowClient()
    champion = client.get_model_version_by_alias(cfg.model_name(), "champion")
    assert champion.tags["crossfuse.modalities"] == "text"
    assert champion.tags["crossfuse.chosen"] == "unimodal:text"
    run = client.get_run(run_id)
    assert run.data.params["auto.winner"] == "unimodal:text"
    assert run.data.tags["crossfuse.model_choice"].startswith("fusion did not help")
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    chosen = json.loads((tmp_path / "model" / "selection.json").read_text())
    # Every default candidate was either cross-fitted (one nested run each) or screened out
    # by the race, and then listed as such.
    fitted_names = {r.data.params["candidate"] for r in children}
    screened = {r["candidate"] for r in chosen["screened_out"]}
    assert fitted_names | screened >= {"linear", "late", "unimodal:image", "unimodal:text"}
    assert not fitted_names & screened and all(f"{name} " in out for name in screened)
    # Each candidate's run spans its real fit time; the console ends with a leaderboard.
    fitted = [r for r in children if r.data.params["candidate"] != "ensemble"]
    for r in fitted:
        assert r.info.end_time - r.info.start_time == pytest.approx(
            1000 * r.data.metrics["fit_seconds"], abs=50)
    assert "CV macro-F1" in out and "(choice took" in out
    # How optimistic the choice was: the winner's CV score minus its test score, logged.
    metrics = run.data.metrics
    winner_cv = float(chosen["ranked"][0]["cv_macro_f1_mean"])
    assert metrics["selection/optimism"] == pytest.approx(winner_cv - metrics["test/macro_f1"])
    assert metrics["calibration/rows"] == chosen["calibration_rows"]  # too few rows here: none
    report = (tmp_path / "evaluation" / "report.html").read_text()
    assert "Model choice" in report and "fusion did not help on this data" in report
    # The data's warning travels: run tags, the version's audit tags, the report.
    warning = "duplicate rows: the same content on lines 2, 122 (ids 'n000', 'copy-of-n000')"
    assert run.data.tags["crossfuse.validation.warnings"] == "1"
    assert run.data.tags["crossfuse.validation.warning.01"].startswith(warning)
    assert champion.tags["crossfuse.validation.warning.01"].startswith(warning)
    assert champion.tags["crossfuse.validation.rejected"] == "0"
    assert "Data warnings" in report and str(escape(warning)) in report
    # The UI is set up for review: a model-development experiment (it opens on runs, not
    # traces), a run that says what ran and where from, the dataset as the run's input.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # The description opens with the decision, then says what ran.
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**{result.model_name} v{result.version} was promoted to champion")
    assert "fusion did not help" in note and "crossfuse pipeline on noise" in note
    assert run.data.tags["mlflow.source.name"] == "crossfuse pipeline (pipelines/multimodal_fusion.py)"
    [used] = run.inputs.dataset_inputs
    assert used.dataset.name == "noise"
    assert used.dataset.digest == run.data.tags["data.manifest_sha256"][:36]


def test_an_explicit_fused_method_that_does_not_beat_text_alone_is_refused(noise_images, tmp_path):
    # concat on noise images + captions scores what text alone scores (both separate the
    # classes): a gain of 0. Asking for a gain of at least 0.01 makes the gate refuse it,
    # through the real evaluate and register stages.
    _, run_id, result = run_auto(tmp_path, noise_images, "fusion.method=concat",
                                   "registry.guardrails.min_fusion_gain=0.01")
    metrics = run_metrics(MlflowClient().get_run(run_id))
    assert metrics["fusion_gain_macro_f1"] < 0.01
    assert not result.promoted and result.champion_version == ""  # no champion at all
    assert "fusion lost to one modality alone" in result.reason
