"""Noise sweeps and modality importance on feature sets whose answer is known."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import xor_features
from PIL import Image

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.data.images import pixel_noise
from crossfuse.data.text import word_dropout
from crossfuse.evaluation.importance import modality_importance
from crossfuse.evaluation.robustness import feature_noise_rows, noise_levels, robustness_metrics
from crossfuse.features.store import FeatureSet
from crossfuse.training.loop import fit


def text_only_features(n=400, seed=0) -> FeatureSet:
    """Label = a bit that only 'text' carries; 'image' is pure noise."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, 2, (n,), generator=g)
    text = torch.randn(n, 6, generator=g) * 0.5
    text[:, 0] += b * 3.0
    splits = ["train"] * (n * 7 // 10) + ["val"] * (n * 15 // 100)
    splits += ["test"] * (n - len(splits))
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "split": splits,
                          "label_idx": b.numpy(), "present_image": True, "present_text": True})
    return FeatureSet(index=index, labels=["0", "1"], encoders={},
                      vectors={"image": torch.randn(n, 8, generator=g), "text": text})


@pytest.fixture(scope="module")
def xor_model():
    fs = xor_features()
    head, _ = fit(fs, FusionConfig(method="concat", hidden_dim=32), TrainConfig(epochs=60, patience=10),
                  seed=0)
    return head, fs


def test_feature_noise_degrades_from_the_clean_score(xor_model):
    head, fs = xor_model
    levels = noise_levels(11)
    rows = feature_noise_rows(head, fs, levels, seed=0)
    frame = pd.DataFrame(rows)
    assert len(frame) == 22 and set(frame["kind"]) == {"features"}
    for _, curve in frame.groupby("modality"):
        f1 = curve.sort_values("level")["macro_f1"].to_numpy()
        assert f1[0] > 0.9             # clean
        assert f1[-1] < f1[0] - 0.1    # noise as large as the data's own spread hurts
        assert f1[-1] < f1[2]          # more noise, worse (at the ends of the sweep)
    auc = robustness_metrics(rows)
    assert set(auc) == {"robustness_image_features_auc", "robustness_text_features_auc"}
    for value in auc.values():
        assert 0.25 < value < f1[0]
    assert rows == feature_noise_rows(head, fs, levels, seed=0)  # seeded: same curves again


def test_noise_on_an_ignored_modality_changes_little():
    fs = text_only_features()
    head, _ = fit(fs, FusionConfig(method="concat", hidden_dim=32), TrainConfig(epochs=60, patience=10),
                  seed=0)
    rows = feature_noise_rows(head, fs, noise_levels(6), seed=0)
    clean = rows[0]["macro_f1"]
    auc = robustness_metrics(rows)
    assert auc["robustness_image_features_auc"] > clean - 0.05
    assert auc["robustness_text_features_auc"] < auc["robustness_image_features_auc"] - 0.05


def test_importance_finds_the_modality_that_carries_the_label():
    fs = text_only_features()
    head, _ = fit(fs, FusionConfig(method="concat", hidden_dim=32), TrainConfig(epochs=60, patience=10),
                  seed=0)
    rows = {r["modality"]: r for r in modality_importance(head, fs, repeats=5, seed=0)}
    assert rows["text"]["full"] > 0.9
    assert rows["text"]["drop"] > 0.3 and rows["text"]["permutation"] > 0.3
    assert abs(rows["image"]["drop"]) < 0.1 and abs(rows["image"]["permutation"]) < 0.1


def test_importance_of_two_needed_modalities(xor_model):
    head, fs = xor_model
    rows = modality_importance(head, fs, repeats=3, seed=1)
    assert [r["modality"] for r in rows] == ["image", "text"]
    assert all(r["drop"] > 0.3 and r["permutation"] > 0.3 for r in rows)
    assert rows == modality_importance(head, fs, repeats=3, seed=1)
    assert "permutation" not in modality_importance(head, fs, repeats=0, seed=1)[0]


def test_word_dropout():
    text = " ".join(f"w{i}" for i in range(2000))
    rng = np.random.default_rng(0)
    assert word_dropout(text, 0.0, rng) == text
    assert word_dropout(text, 1.0, rng) == ""
    kept = word_dropout(text, 0.3, rng).split()
    assert 0.65 < len(kept) / 2000 < 0.75
    assert kept == [w for w in text.split() if w in set(kept)]  # order kept, nothing invented


def test_pixel_noise():
    img = Image.new("RGB", (16, 16), (128, 64, 200))
    assert np.array_equal(np.asarray(pixel_noise(img, 0.0, np.random.default_rng(0))),
                          np.asarray(img))
    noisy = pixel_noise(img, 0.5, np.random.default_rng(0))
    assert noisy.size == img.size and noisy.mode == "RGB"
    diff = np.abs(np.asarray(noisy, dtype=float) - np.asarray(img, dtype=float)) / 255
    assert 0.2 < diff.mean() < 0.5
    assert np.array_equal(np.asarray(noisy),
                          np.asarray(pixel_noise(img, 0.5, np.random.default_rng(0))))
