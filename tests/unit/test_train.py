"""Training: learns a task that needs both modalities, early-stops, is reproducible."""

import pandas as pd
import pytest
import torch

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.features.store import FeatureSet
from crossfuse.training.loop import fit


def xor_features(n=600, seed=0) -> FeatureSet:
    """Label = 2*a + b where modality 'image' encodes a and 'text' encodes b, plus noise."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 2, (n,), generator=g)
    b = torch.randint(0, 2, (n,), generator=g)
    image = torch.randn(n, 8, generator=g) * 0.5
    image[:, 0] += a * 3.0
    text = torch.randn(n, 6, generator=g) * 0.5
    text[:, 0] += b * 3.0
    splits = ["train"] * (n * 7 // 10) + ["val"] * (n * 15 // 100)
    splits += ["test"] * (n - len(splits))
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "split": splits,
                          "label_idx": (2 * a + b).numpy(), "present_image": True,
                          "present_text": True})
    return FeatureSet(index=index, labels=["00", "01", "10", "11"], encoders={},
                      vectors={"image": image, "text": text})


@pytest.mark.parametrize("method", ["concat", "late"])
def test_fused_model_beats_each_modality(method):
    fs = xor_features()
    train_cfg = TrainConfig(epochs=80, patience=10)
    fusion = FusionConfig(method=method, hidden_dim=32)
    _, fused = fit(fs, fusion, train_cfg, seed=0)
    _, image_only = fit(fs, fusion, train_cfg, seed=0, modalities=["image"])
    assert fused.best_val_macro_f1 > 0.9
    assert image_only.best_val_macro_f1 < 0.6


def test_same_seed_same_result_and_epoch_callback():
    fs = xor_features()
    seen = []
    h1, r1 = fit(fs, FusionConfig(hidden_dim=16), TrainConfig(epochs=5), seed=1,
                 on_epoch=lambda e, m: seen.append((e, sorted(m))))
    h2, r2 = fit(fs, FusionConfig(hidden_dim=16), TrainConfig(epochs=5), seed=1)
    assert r1.history == r2.history
    for va, vb in zip(h1.state_dict().values(), h2.state_dict().values(), strict=True):
        assert torch.equal(va, vb)
    assert seen[0] == (1, ["train_loss", "val_accuracy", "val_loss", "val_macro_f1"])
    assert len(seen) == 5


def test_early_stopping_keeps_the_best_epoch():
    fs = xor_features()
    head, result = fit(fs, FusionConfig(hidden_dim=16), TrainConfig(epochs=200, patience=3),
                       seed=0)
    assert result.epochs_run < 200
    assert result.epochs_run - result.best_epoch <= 3
    best = max(h["val_macro_f1"] for h in result.history)
    assert result.best_val_macro_f1 == best
    x, p, y = fs.split_tensors("val", ["image", "text"])
    pred = head(x, p).argmax(-1)
    from crossfuse.metrics import macro_f1

    assert macro_f1(y.numpy(), pred.numpy(), 4) == pytest.approx(best)


def test_empty_validation_split_is_explained():
    fs = xor_features()
    fs.index["split"] = fs.index["split"].replace({"val": "train"})
    with pytest.raises(ValueError, match="need train and val samples"):
        fit(fs, FusionConfig(), TrainConfig(epochs=1), seed=0)


def test_classification_metrics_on_known_values():
    import numpy as np

    from crossfuse.evaluation.evaluate import classification_metrics

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
