"""A trained model keeps a reference to its training rows; it reads back the exact vectors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import trained_model

from crossfuse.features.reference import REFERENCE_FILE, load_reference
from crossfuse.features.store import read_feature_set

pytestmark = pytest.mark.slow


def test_the_model_reference_reads_back_its_training_vectors(sample_dataset, make_config,
                                                             tmp_path):
    cfg = trained_model(make_config, sample_dataset, tmp_path)
    fs = read_feature_set(tmp_path / "features")
    ref = load_reference(tmp_path / "model", cfg.extract.cache_dir)
    learned = fs.index["split"].isin(["train", "val"]).to_numpy()
    assert ref.labels == fs.index.loc[learned, "label"].tolist()
    for m in ("image", "text"):
        rows = learned & fs.index[f"present_{m}"].to_numpy()
        assert np.array_equal(ref.present[m], fs.index.loc[learned, f"present_{m}"].to_numpy())
        assert torch.equal(torch.from_numpy(ref.vectors[m]), fs.vectors[m][rows])

    shutil.rmtree(cfg.extract.cache_dir)                 # the vectors are gone: say so, and how
    with pytest.raises(FileNotFoundError, match="lacks .* image vectors this model was trained on"):
        load_reference(tmp_path / "model", cfg.extract.cache_dir)
    (tmp_path / "model" / REFERENCE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="trained before crossfuse kept a drift reference"):
        load_reference(tmp_path / "model", cfg.extract.cache_dir)
