"""Raw-noise robustness keeps the features of its noised inputs: a re-run encodes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import trained_model

from crossfuse.data.preprocess import read_samples
from crossfuse.evaluation.robustness import raw_noise_rows
from crossfuse.features.store import read_feature_set
from crossfuse.registry.serving import FusionPredictor

pytestmark = pytest.mark.slow


def test_noised_features_are_cached_and_give_the_same_curve(sample_dataset, make_config,
                                                            tmp_path):
    cfg = trained_model(make_config, sample_dataset, tmp_path)
    fs, samples = read_feature_set(tmp_path / "features"), read_samples(tmp_path / "pre")[0]
    predictor = FusionPredictor(tmp_path / "model")
    calls = []
    encode = predictor.encode_items
    predictor.encode_items = lambda m, items: calls.append(m) or encode(m, items)
    levels = np.linspace(0, 1, 3)

    def sweep(cache):
        return raw_noise_rows(predictor, fs, samples, tmp_path / "pre", levels, cfg.seed, 16, cache)

    first = sweep(tmp_path / "noise-cache")
    assert sorted(calls) == ["image", "image", "text", "text"]     # two noisy levels each
    assert len(list((tmp_path / "noise-cache" / "noised").glob("*.safetensors"))) == 4
    calls.clear()
    assert sweep(tmp_path / "noise-cache") == first and calls == []
    assert sweep(None) == first and len(calls) == 4                  # no cache: encoded again

    # A fresh predictor on a warm cache never even loads an encoder.
    fresh = FusionPredictor(tmp_path / "model")
    assert raw_noise_rows(fresh, fs, samples, tmp_path / "pre", levels, cfg.seed, 16,
                          tmp_path / "noise-cache") == first
    assert fresh._encoders == {}
