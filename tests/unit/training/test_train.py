"""Training: learns a task that needs both modalities, early-stops, is reproducible."""

import pytest
import torch
from conftest import xor_features

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.errors import UserError
from crossfuse.training.loop import fit, fit_epochs


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
    h1, r1 = fit(fs, FusionConfig(method="concat", hidden_dim=16), TrainConfig(epochs=5), seed=1,
                 on_epoch=lambda e, m: seen.append((e, sorted(m))))
    h2, r2 = fit(fs, FusionConfig(method="concat", hidden_dim=16), TrainConfig(epochs=5), seed=1)
    assert r1.history == r2.history
    for va, vb in zip(h1.state_dict().values(), h2.state_dict().values(), strict=True):
        assert torch.equal(va, vb)
    assert seen[0] == (1, ["train_loss", "val_accuracy", "val_loss", "val_macro_f1"])
    assert len(seen) == 5


def test_early_stopping_keeps_the_best_epoch():
    fs = xor_features()
    head, result = fit(fs, FusionConfig(method="concat", hidden_dim=16), TrainConfig(epochs=200, patience=3),
                       seed=0)
    assert result.epochs_run < 200
    assert result.epochs_run - result.best_epoch <= 3
    best = max(h["val_macro_f1"] for h in result.history)
    assert result.best_val_macro_f1 == best
    x, p, y = fs.split_tensors("val", ["image", "text"])
    pred = head(x, p).argmax(-1)
    from crossfuse.metrics import macro_f1

    assert macro_f1(y.numpy(), pred.numpy(), 4) == pytest.approx(best)


def test_fit_epochs_trains_exactly_as_fit_does_for_that_many_epochs():
    """A refit for n epochs is the run early stopping measured, minus the validation."""
    fs = xor_features()
    fusion, train = FusionConfig(method="gmu", hidden_dim=16, dropout=0.3), TrainConfig(epochs=4)
    fitted, result = fit(fs, fusion, train.model_copy(update={"patience": 100}), seed=2)
    assert result.best_epoch == 4  # still improving: fit keeps the last epoch's weights
    refitted = fit_epochs(fs, fusion, train, seed=2, epochs=4)
    for a, b in zip(fitted.state_dict().values(), refitted.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not refitted.training
    with pytest.raises(ValueError, match="one fusion method"):
        fit_epochs(fs, FusionConfig(method="auto"), train, seed=2, epochs=1)


def test_empty_validation_split_is_explained():
    fs = xor_features()
    fs.index["split"] = fs.index["split"].replace({"val": "train"})
    with pytest.raises(UserError, match="need train and val samples"):
        fit(fs, FusionConfig(method="concat"), TrainConfig(epochs=1), seed=0)


def test_label_smoothing_softens_the_loss_as_cross_entropy_defines_it():
    from crossfuse.training.loop import training_loss

    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 1])
    out, present = {"label": logits}, {"text": torch.ones(2, dtype=torch.bool)}
    plain = training_loss(out, {"label": y}, present, "label", FusionConfig(), TrainConfig())
    smooth = training_loss(out, {"label": y}, present, "label", FusionConfig(),
                           TrainConfig(label_smoothing=0.3))
    log_p = logits.log_softmax(-1)
    target = torch.full((2, 3), 0.1)
    target[0, 0] = target[1, 1] = 0.8
    assert smooth == pytest.approx(float(-(target * log_p).sum(-1).mean()), rel=1e-6)
    assert smooth > plain  # confident right answers are penalised for their confidence
