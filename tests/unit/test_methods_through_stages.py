"""Every fusion method through the train and evaluate stages and the served model."""

import pandas as pd
import pytest

from crossfuse.data.preprocess import preprocess
from crossfuse.evaluation.evaluate import evaluate
from crossfuse.features.extract import extract
from crossfuse.fusion import FUSION_METHODS
from crossfuse.registry.serving import FusionPredictor
from crossfuse.training.train import train


@pytest.fixture(scope="module")
def features(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    from conftest import build_config

    root = tmp_path_factory.mktemp("methods")
    cfg = build_config(root, sample_dataset, tiny_text_model, tiny_image_model)
    preprocess(cfg, sample_dataset, root / "pre")
    extract(cfg, root / "pre", root / "features")
    return cfg, root / "features"


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_method_trains_evaluates_and_serves(method, features, tmp_path):
    cfg, feature_dir = features
    cfg = cfg.model_copy(update={
        "fusion": cfg.fusion.model_copy(update={"method": method, "hidden_dim": 32}),
        "train": cfg.train.model_copy(update={"epochs": 5}),
        "evaluate": cfg.evaluate.model_copy(update={"unimodal_baselines": False})})
    result = train(cfg, feature_dir, tmp_path / "model")
    assert result.method == method and result.epochs_run >= 1
    metrics = evaluate(cfg, feature_dir, tmp_path / "model", tmp_path / "eval").metrics
    assert 0.0 <= metrics["test_macro_f1"] <= 1.0
    preds = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    data = cfg.data.path
    rows = pd.read_csv(f"{data}/manifest.csv").set_index("id").loc[preds["id"][:4]]
    served = FusionPredictor(tmp_path / "model", media_root=data).predict(pd.DataFrame(
        {"text": rows["text"].tolist(), "image": [f"{data}/{p}" for p in rows["image"]]}))
    assert served["label"].tolist() == preds["predicted"][:4].tolist()
