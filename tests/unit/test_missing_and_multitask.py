"""Missing modalities and extra targets, through validate -> preprocess -> extract -> train -> evaluate."""

import json
import shutil

import pandas as pd
import pytest

from crossfuse.data.manifest import load_run_manifest
from crossfuse.data.preprocess import preprocess
from crossfuse.data.validation import validate
from crossfuse.evaluation.evaluate import evaluate
from crossfuse.features.extract import extract
from crossfuse.features.store import read_feature_set
from crossfuse.registry.serving import FusionPredictor
from crossfuse.training.train import train


@pytest.fixture
def holey(tmp_path, sample_dataset):
    """The sample set with text missing on lines 2-6, the image on lines 7-9, both on line 10."""
    root = tmp_path / "holey"
    shutil.copytree(sample_dataset, root)
    frame = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    frame.loc[0:4, "text"] = ""
    frame.loc[5:7, "image"] = ""
    frame.loc[8, ["text", "image"]] = ""
    frame.to_csv(root / "manifest.csv", index=False)
    return root


def test_missing_modalities_are_rejected_unless_allowed(holey, make_config, tmp_path):
    strict = validate(make_config(holey), holey, tmp_path / "strict")
    assert {(i.column, i.reason) for i in strict.issues} == {("text", "missing text"),
                                                              ("image", "missing image")}
    assert strict.n_rejected == 9

    cfg = make_config(holey, "validation.allow_missing_modalities=true")
    lenient = validate(cfg, holey, tmp_path / "lenient")
    assert [(i.line, i.reason) for i in lenient.issues] == [(10, "every modality is missing")]


def test_missing_modalities_flow_to_features_and_predictions(holey, make_config, tmp_path):
    # A fused method: this test is about one model answering with either modality missing.
    cfg = make_config(holey, "validation.allow_missing_modalities=true", "fusion.method=concat",
                      "train.modality_dropout.text=0.3", "fusion.aux_weight=0.3")
    report = validate(cfg, holey, tmp_path / "v")
    preprocess(cfg, holey, tmp_path / "pre", rejected_lines=report.rejected_lines)
    result = extract(cfg, tmp_path / "pre", tmp_path / "f")
    fs = read_feature_set(tmp_path / "f")
    assert len(fs.index) == 59
    assert int((~fs.present("text")).sum()) == 5 and int((~fs.present("image")).sum()) == 3
    assert result.encoded["image"] == 56
    assert float(fs.vectors["text"][~fs.present("text")].abs().sum()) == 0.0

    train(cfg, tmp_path / "f", tmp_path / "model")
    evaluate(cfg, tmp_path / "f", tmp_path / "model", tmp_path / "eval")
    predictor = FusionPredictor(tmp_path / "model", media_root=holey)
    image = str(holey / "images" / "s00010.png")
    out = predictor.predict(pd.DataFrame({"text": ["A fox rested at noon.", None],
                                          "image": [None, image]}))
    assert len(out) == 2 and out["label"].isin(fs.labels).all()
    from crossfuse.registry.serving import InvalidInput

    with pytest.raises(InvalidInput, match="row 1: every modality is missing"):
        predictor.predict(pd.DataFrame({"text": ["A fox rested at noon.", ""],
                                        "image": [None, ""]}))
    probs = out[[f"p_{c}" for c in fs.labels]].sum(axis=1)
    assert probs.round(5).eq(1.0).all()


def test_extra_target_from_extra_columns_file(sample_dataset, make_config, tmp_path):
    root = tmp_path / "multi"
    shutil.copytree(sample_dataset, root)
    manifest = pd.read_csv(root / "manifest.csv")
    pd.DataFrame({"id": manifest["id"], "shape": manifest["label"].str.split("-").str[0]}).to_csv(
        root / "extra.csv", index=False)
    cfg = make_config(root, "data.extra_columns_file=extra.csv", "data.extra_targets=[shape]")
    assert validate(cfg, root, tmp_path / "v").success
    preprocess(cfg, root, tmp_path / "pre")
    extract(cfg, tmp_path / "pre", tmp_path / "f")
    fs = read_feature_set(tmp_path / "f")
    assert fs.targets == {"shape": ["circle", "square", "triangle"]}
    train(cfg, tmp_path / "f", tmp_path / "model")
    metrics = evaluate(cfg, tmp_path / "f", tmp_path / "model", tmp_path / "eval").metrics
    assert 0.0 <= metrics["test_shape_macro_f1"] <= 1.0 and "test_shape_accuracy" in metrics
    assert {"test_shape_micro_f1", "test_shape_log_loss", "test_shape_auroc_ovr"} <= set(metrics)
    report = json.loads((tmp_path / "eval" / "classification_report_shape.json").read_text())
    assert set(report) >= {"circle", "square", "triangle", "macro avg"}
    assert report["macro avg"]["f1-score"] == pytest.approx(metrics["test_shape_macro_f1"])
    assert (tmp_path / "eval" / "confusion_matrix_shape.png").stat().st_size > 1000
    spec = json.loads((tmp_path / "model" / "fusion_spec.json").read_text())
    assert spec["extra_targets"] == {"shape": 3}
    request = {"text": ["A fox at noon."], "image": [str(root / "images" / "s00000.png")]}
    out = FusionPredictor(tmp_path / "model", media_root=root).predict(pd.DataFrame(
        {m: request[m] for m in spec["dims"]}))  # auto may ship a one-modality model
    assert out["shape"].iloc[0] in {"circle", "square", "triangle"}


def test_extra_columns_file_must_have_unique_ids(sample_dataset, make_config, tmp_path):
    from crossfuse.data.manifest import ManifestError

    root = tmp_path / "dup"
    shutil.copytree(sample_dataset, root)
    (root / "extra.csv").write_text("id,shape\ns00000,circle\ns00000,square\n")
    cfg = make_config(root, "data.extra_columns_file=extra.csv", "data.extra_targets=[shape]")
    with pytest.raises(ManifestError, match="s00000' appears more than once"):
        load_run_manifest(cfg)
