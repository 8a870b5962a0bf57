"""Linear probes: the ``linear`` head fitted as logistic regression by full-batch L-BFGS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.metrics import predict_split
from crossfuse.training.probe import PENALTIES, fit_probe, normalised_inputs, tune_penalty


def two_modalities(n=400, seed=0, classes=3) -> FeatureSet:
    """Both modalities carry the label (weakly), so either alone does better than chance."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    image = torch.randn(n, 12, generator=g)
    text = torch.randn(n, 5, generator=g)
    image[torch.arange(n), y] += 1.5
    text[torch.arange(n), y] += 1.5
    splits = ["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "split": splits, "label_idx": y.numpy(),
                          "label": [str(i) for i in y.tolist()], "present_image": True,
                          "present_text": True})
    return FeatureSet(index=index, labels=[str(c) for c in range(classes)],
                      encoders={"image": {}, "text": {}}, vectors={"image": image, "text": text})


def test_a_probe_is_the_logistic_regression_of_its_normalised_inputs():
    from sklearn.linear_model import LogisticRegression

    fs = two_modalities()
    penalty = 1e-2
    head = fit_probe(fs, FusionConfig(), TrainConfig(), ["image", "text"], penalty)
    assert head.spec.method == "linear" and not head.training
    train = fs.split_inputs("train", ["image", "text"])
    x = normalised_inputs(head, train).numpy()
    # scikit-learn minimises C * sum(CE) + ||W||^2 / 2: the same optimum when C = 1 / (penalty * n).
    reference = LogisticRegression(C=1 / (penalty * len(x)), max_iter=5000, tol=1e-10)
    reference.fit(x, train.labels.numpy())
    test = fs.split_inputs("test", ["image", "text"])
    ours = predict_split(head, test).probs
    theirs = reference.predict_proba(normalised_inputs(head, test).numpy())
    assert np.abs(ours - theirs).max() < 2e-3
    assert (ours.argmax(1) == theirs.argmax(1)).mean() > 0.99


def test_a_missing_modality_adds_nothing_and_dropout_teaches_the_probe_to_answer_without_it():
    fs = two_modalities(n=600)
    test = fs.split_inputs("test", ["image", "text"])
    image_only = test.replace(present={**test.present, "text": torch.zeros(len(test), dtype=torch.bool)})
    plain = fit_probe(fs, FusionConfig(), TrainConfig(), ["image", "text"], 1e-3)
    # LayerNorm of the zero placeholder is zero: a missing modality's block contributes 0.
    x = normalised_inputs(plain, image_only)
    assert torch.equal(x[:, 12:], torch.zeros(len(test), 5))
    trained = fit_probe(fs, FusionConfig(), TrainConfig(modality_dropout={"image": 0.5, "text": 0.5}),
                        ["image", "text"], 1e-3)
    alone = fit_probe(fs, FusionConfig(), TrainConfig(), ["image"], 1e-3)
    nll = {name: predict_split(head, image_only).nll for name, head in
           {"plain": plain, "dropout": trained}.items()}
    assert nll["dropout"] < nll["plain"]  # calibrated for rows without text
    # ...and close to a probe that only ever saw images.
    assert abs(predict_split(trained, image_only).macro_f1
               - predict_split(alone, fs.split_inputs("test", ["image"])).macro_f1) < 0.05


def test_tuning_keeps_the_best_penalty_on_val_and_breaks_ties_by_the_loss():
    fs = two_modalities()
    tuned = tune_penalty(fs, FusionConfig(), TrainConfig(), ["image", "text"])
    assert tuned.penalty in PENALTIES and 1 <= tuned.fits <= len(PENALTIES)
    val = predict_split(tuned.head, fs.split_inputs("val", ["image", "text"]))
    assert tuned.value == pytest.approx((val.macro_f1, -val.nll))
    # Separable classes: every penalty scores macro-F1 1.0 on val, and the lowest loss (a
    # weak penalty: confident and right) wins the tie over the strongest.
    separable = two_modalities()
    y = torch.tensor(separable.index["label_idx"].to_numpy())
    separable.vectors["text"][torch.arange(len(y)), y] += 20.0
    tuned = tune_penalty(separable, FusionConfig(), TrainConfig(), ["image", "text"])
    assert tuned.value[0] == 1.0 and tuned.penalty < PENALTIES[0]
