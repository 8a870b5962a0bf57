"""Unimodal baselines of a fixed method: each searched like the fused model, not handed its settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from crossfuse.config import load_config
from crossfuse.features.store import FeatureSet
from crossfuse.metrics import SplitScores


def _features(n=240) -> FeatureSet:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    text = torch.randn(n, 6, generator=g) * 0.6
    text[:, 0] += y * 2.0
    splits = ["train"] * (n * 7 // 10) + ["val"] * (n * 15 // 100)
    splits += ["test"] * (n - len(splits))
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "split": splits,
                          "label_idx": y.numpy(), "present_image": True, "present_text": True})
    return FeatureSet(index=index, labels=["a", "b"], encoders={"image": {}, "text": {}},
                      vectors={"image": torch.randn(n, 16, generator=g), "text": text})


def perfect_scores(fs: FeatureSet) -> SplitScores:
    """A fused model that gets every test row right."""
    y = fs.index.loc[fs.index["split"] == "test", "label_idx"].to_numpy()
    return SplitScores(labels=y, probs=np.eye(len(fs.labels))[y])


def test_the_fusion_gain_comes_with_its_paired_interval(tmp_path):
    import crossfuse.evaluation.evaluate as evaluate

    cfg = load_config(None, ["fusion.method=concat", "fusion.hidden_dim=16", "train.epochs=10"],
                      env={})
    (tmp_path / "run_config.json").write_text(cfg.to_json())
    fs = _features()
    metrics = evaluate.baseline_section(cfg, fs, tmp_path, ["image", "text"], perfect_scores(fs))
    low, high = metrics["fusion_gain_macro_f1_ci_low"], metrics["fusion_gain_macro_f1_ci_high"]
    assert low <= metrics["fusion_gain_macro_f1"] <= high and high - low > 0.01
    # Scored on the same draws, a model against itself gains exactly 0 on every draw.
    same = perfect_scores(fs)
    assert evaluate.gain_interval(same, same, 2, 200, 0) == {
        "fusion_gain_macro_f1_ci_low": 0.0, "fusion_gain_macro_f1_ci_high": 0.0}
    assert evaluate.gain_interval(same, same, 2, 0, 0) == {}  # registry.bootstrap=0: none


def test_the_headline_interval_narrows_with_more_test_rows():
    import crossfuse.evaluation.evaluate as evaluate

    rng = np.random.default_rng(0)
    widths = []
    for n in (60, 600):
        y = rng.integers(0, 3, n)
        predicted = np.where(rng.random(n) < 0.8, y, rng.integers(0, 3, n))
        scores = SplitScores(y, np.eye(3)[predicted])
        ci = evaluate.headline_interval(scores, 3, 500, 0)
        assert ci["test_macro_f1_ci_low"] < scores.macro_f1 < ci["test_macro_f1_ci_high"]
        widths.append(ci["test_macro_f1_ci_high"] - ci["test_macro_f1_ci_low"])
    assert widths[1] < widths[0] / 2


def test_each_baseline_of_a_searched_method_gets_its_own_search_with_the_same_budget(
        tmp_path, monkeypatch):
    import crossfuse.evaluation.evaluate as evaluate

    real, calls = evaluate.search, []

    def recorded(fs, fusion, train, seed, trials, epochs=40, modalities=None, on_trial=None):
        calls.append((fusion.method, fusion.dropout, train.lr, trials, epochs, modalities))
        return real(fs, fusion, train, seed, trials, epochs, modalities=modalities)

    monkeypatch.setattr(evaluate, "search", recorded)
    cfg = load_config(None, ["fusion.method=gmu", "fusion.hidden_dim=16", "train.epochs=10",
                             "fusion.search.trials=2", "fusion.search.epochs=5"], env={})
    # The fused model's searched settings, as train saves them: the baselines must not get these.
    searched = cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update={"dropout": 0.55}),
                                      "train": cfg.train.model_copy(update={"lr": 0.0021})})
    (tmp_path / "run_config.json").write_text(searched.to_json())
    fs = _features()
    metrics = evaluate.baseline_section(cfg, fs, tmp_path, ["image", "text"], perfect_scores(fs))
    # One search per modality, from the config's starting point, with the fused model's budget.
    assert calls == [("gmu", cfg.fusion.dropout, cfg.train.lr, 2, 5, [m]) for m in ("image", "text")]
    assert metrics["baseline_text_test_macro_f1"] > metrics["baseline_image_test_macro_f1"]
