"""crossfuse bench small-data: shrinking train+val, the test split untouched, auto beside the rest."""

import numpy as np
import pytest
from conftest import xor_features

from crossfuse.bench.small_data import bench_small_data, markdown_table, subsample, summarise
from crossfuse.config import load_config
from crossfuse.errors import UserError


def test_subsample_keeps_test_and_each_class_share():
    fs = xor_features(n=400)
    fs.index["id"] = [f"r{i}" for i in range(len(fs.index))]
    small = subsample(fs, 0.25, seed=0)
    before, after = fs.index["split"].to_numpy(), small.index["split"].to_numpy()
    assert ((before == "test") == (after == "test")).all()
    for label in range(4):
        cls = fs.index["label_idx"].to_numpy() == label
        labeled = int((cls & np.isin(before, ["train", "val"])).sum())
        assert int((cls & np.isin(after, ["train", "val"])).sum()) == int(np.ceil(0.25 * labeled))
    assert (subsample(fs, 0.25, seed=0).index["split"] == small.index["split"]).all()
    assert not (subsample(fs, 0.25, seed=1).index["split"] == small.index["split"]).all()
    with pytest.raises(UserError, match="fractions must be in"):
        subsample(fs, 0.0, seed=0)


def test_bench_rows_cover_auto_methods_and_unimodal_heads():
    fs = xor_features(n=300)
    fs.index["id"] = [f"r{i}" for i in range(len(fs.index))]
    cfg = load_config(None, ["fusion.hidden_dim=16", "train.epochs=20", "train.patience=4", "train.lr=0.01",
                             "fusion.auto.candidates=[concat]", "fusion.auto.trials=0",
                             "fusion.auto.folds=3"], env={})
    seen = []
    rows = bench_small_data(fs, cfg, fractions=[0.5, 1.0], seeds=[0], methods=["concat"],
                            on_row=seen.append)
    assert seen == rows
    assert [(r["fraction"], r["model"]) for r in rows] == [
        (f, m) for f in (0.5, 1.0)
        for m in ("auto", "auto:refit", "concat", "unimodal:image", "unimodal:text")]
    auto = [r for r in rows if r["model"].startswith("auto")]
    assert all(r["winner"] in {"concat", "ensemble"} for r in auto)  # both modalities are needed
    for bagged, refitted in zip(auto[::2], auto[1::2], strict=True):  # one choice, two ways to ship
        assert bagged["winner"] == refitted["winner"] and refitted["seconds"] >= bagged["seconds"]
        assert refitted["test_macro_f1"] > 0.4  # 4 classes: a refit that learned nothing scores ~0.25
    assert rows[0]["train_val_rows"] < rows[-1]["train_val_rows"]
    fixed = [s for s in summarise(rows) if not s["model"].startswith("auto")]  # best first within a fraction
    for fraction in (0.5, 1.0):
        assert next(s["model"] for s in fixed if s["fraction"] == fraction) == "concat"
    assert "| 50% |" in markdown_table(rows)
    # Each row says how calibration did on test: ECE and log loss before and after.
    for r in rows:
        assert {"temperature", "ece_before", "ece_after", "log_loss_before", "log_loss_after"} <= set(r)
        assert 0.25 <= r["temperature"] <= 20
