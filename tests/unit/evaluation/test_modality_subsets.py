"""The missing-modality matrix: one trained model, scored with each subset of modalities present."""

from conftest import xor_features

from crossfuse.config import FusionConfig, TrainConfig
from crossfuse.evaluation.modality_subsets import subset_metrics, subsets
from crossfuse.training.loop import fit


def test_subsets_of_three():
    assert subsets(["a", "b", "c"]) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"),
                                        ("b", "c"), ("a", "b", "c")]


def test_each_modality_alone_scores_below_both_on_a_task_needing_both():
    fs = xor_features()
    head, _ = fit(fs, FusionConfig(method="concat", hidden_dim=32), TrainConfig(epochs=80, patience=10,
                                                               modality_dropout={"image": 0.3,
                                                                                 "text": 0.3}),
                  seed=0)
    rows = {r["subset"]: r for r in subset_metrics(head, fs)}
    assert list(rows) == ["image", "text", "image+text"]
    assert rows["image+text"]["macro_f1"] > 0.9
    for alone in ("image", "text"):
        # Alone, a modality knows one of the two bits: at most half of the four classes.
        assert rows[alone]["accuracy"] < 0.6
        assert rows[alone]["accuracy"] > 0.35  # but it still knows its bit (chance is 0.25)


def test_masking_a_modality_equals_feeding_missing_rows():
    fs = xor_features(n=100)
    head, _ = fit(fs, FusionConfig(method="concat", hidden_dim=16), TrainConfig(epochs=3), seed=0)
    rows = {r["subset"]: r for r in subset_metrics(head, fs)}
    fs.index["present_text"] = False                      # the data itself lacks text
    lacking = {r["subset"]: r for r in subset_metrics(head, fs)}
    # Dropping text at test time is the same as data that never had it.
    assert rows["image"] == lacking["image"]
    assert {k: v for k, v in lacking["image+text"].items() if k != "subset"} == \
        {k: v for k, v in rows["image"].items() if k != "subset"}
