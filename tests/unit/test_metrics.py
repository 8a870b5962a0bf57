"""Metrics and the one scoring path every stage uses (crossfuse.metrics)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from crossfuse.features.store import SplitInputs
from crossfuse.fusion import FusionSpec, build_fusion_head
from crossfuse.metrics import classification_metrics, macro_f1, metric_name, predict_split


def test_classification_metrics_on_known_values():
    y = np.array([0, 0, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    m = classification_metrics(y, probs)
    assert m["test_accuracy"] == m["test_micro_f1"] == 0.75
    assert m["test_auroc_ovr"] == pytest.approx((1.0 + 1.0 + 1.0) / 3)
    expected_loss = -np.mean(np.log([0.8, 0.4, 0.7, 0.8]))
    assert m["test_log_loss"] == pytest.approx(expected_loss)
    # A class absent from y has no ROC curve and is left out of the average.
    m2 = classification_metrics(np.array([0, 0, 1]), probs[:3])
    assert "test_auroc_ovr" in m2 and m2["test_macro_f1"] < 1


def test_macro_f1_counts_a_class_never_seen_as_zero():
    # 3 classes declared, class 2 never appears and is never predicted: it still weighs 1/3.
    assert macro_f1(np.array([0, 1]), np.array([0, 1]), num_classes=3) == pytest.approx(2 / 3)


def test_predict_split_matches_the_head_and_sklearn():
    torch.manual_seed(0)
    head = build_fusion_head(FusionSpec("concat", {"image": 6, "text": 4}, num_classes=3,
                                        hidden_dim=8)).eval()
    present = {"image": torch.tensor([True, False, True, True, False]),
               "text": torch.ones(5, dtype=torch.bool)}
    inputs = SplitInputs({"image": torch.randn(5, 6), "text": torch.randn(5, 4)}, present,
                         torch.tensor([0, 1, 2, 1, 0]))
    scores = predict_split(head, inputs)
    with torch.no_grad():
        expected = head(inputs.vectors, inputs.present).softmax(-1).numpy()
    np.testing.assert_allclose(scores.probs, expected, rtol=1e-6)
    assert list(scores.predicted) == list(expected.argmax(-1))
    assert scores.accuracy == pytest.approx(float((expected.argmax(-1) == [0, 1, 2, 1, 0]).mean()))
    assert scores.nll == pytest.approx(log_loss([0, 1, 2, 1, 0], expected, labels=[0, 1, 2]),
                                       rel=1e-5)
    # A masked modality changes the scores only through the presence mask.
    masked = predict_split(head, inputs.replace(present={**present, "image": present["image"] & False}))
    assert not np.allclose(masked.probs, scores.probs)


def test_split_inputs_select_keeps_rows_aligned():
    inputs = SplitInputs({"text": torch.arange(8.0).view(4, 2)},
                         {"text": torch.tensor([True, False, True, True])}, torch.tensor([0, 1, 2, 3]),
                         {"text": (torch.zeros(4, 3, 2), torch.ones(4, 3, dtype=torch.bool))})
    part = inputs.select(torch.tensor([3, 1]))
    assert part.labels.tolist() == [3, 1]
    assert part.vectors["text"][:, 0].tolist() == [6.0, 2.0]
    assert part.present["text"].tolist() == [True, False]
    assert part.tokens["text"][0].shape == (2, 3, 2)


def test_metric_names_are_mlflow_safe():
    assert metric_name("a b+c/d") == "a_b_c_d"
