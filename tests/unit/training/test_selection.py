"""fusion.method: auto — folds, ensemble selection, the chosen model, what ships."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import xor_features

from crossfuse.config import load_config
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionEnsemble, FusionHead, FusionSpec, load_fusion_head, save_fusion_head
from crossfuse.metrics import macro_f1
from crossfuse.training.folds import stratified_folds
from crossfuse.training.selection import greedy_ensemble, select_model
from crossfuse.training.train import BASELINES_DIR, SELECTION_FILE, train


def test_folds_are_stratified_deterministic_and_disjoint():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 7
    ids = [f"id{i}" for i in range(len(labels))]
    folds = stratified_folds(labels, ids, k=5, seed=3)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4] and len(folds) == len(ids)
    for label in "abc":
        per_fold = np.bincount(folds[np.array(labels) == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (label, per_fold)
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    assert np.array_equal(folds, stratified_folds(labels, ids, k=5, seed=3))
    assert not np.array_equal(folds, stratified_folds(labels, ids, k=5, seed=4))
    # The ids decide, not the row order: shuffled rows keep their folds.
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = stratified_folds([labels[i] for i in order], [ids[i] for i in order], k=5, seed=3)
    assert np.array_equal(shuffled, folds[order])


def test_folds_refuse_duplicate_ids_and_one_fold():
    with pytest.raises(ValueError, match="unique sample ids"):
        stratified_folds(["a", "b"], ["x", "x"], k=2, seed=0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_folds(["a", "b"], ["x", "y"], k=1, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_ensemble_out_of_fold_score_is_never_below_its_best_member(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 200)
    oof = {}
    for name, skill in [("a", 1.5), ("b", 1.0), ("c", 0.5), ("d", 0.0)]:
        logits = rng.normal(size=(200, 3)) + skill * np.eye(3)[y]
        oof[name] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    picks = greedy_ensemble(oof, y, rounds=15)
    weights = {n: c / sum(picks.values()) for n, c in picks.items()}
    mixed = sum(w * oof[n] for n, w in weights.items())
    best_single = max(macro_f1(y, p.argmax(-1), 3) for p in oof.values())
    assert macro_f1(y, mixed.argmax(-1), 3) >= best_single


def test_an_ensemble_saves_loads_and_predicts_like_its_members(tmp_path):
    torch.manual_seed(0)
    both = FusionHead(FusionSpec("concat", {"image": 8, "text": 4}, 3, hidden_dim=16)).eval()
    text = FusionHead(FusionSpec("late", {"text": 4}, 3, hidden_dim=16)).eval()
    ensemble = FusionEnsemble([both, text], [0.25, 0.75])
    save_fusion_head(ensemble, tmp_path, extra={"labels": ["x", "y", "z"]})
    loaded, meta = load_fusion_head(tmp_path)
    x = {"image": torch.randn(5, 8), "text": torch.randn(5, 4)}
    present = {"image": torch.tensor([True, False, True, True, False]),
               "text": torch.ones(5, dtype=torch.bool)}
    expected = 0.25 * both(x, present).softmax(-1) + 0.75 * text({"text": x["text"]},
                                                                 {"text": present["text"]}).softmax(-1)
    assert torch.allclose(loaded(x, present).softmax(-1), expected, atol=1e-6)
    assert meta["method"] == "ensemble" and meta["labels"] == ["x", "y", "z"]
    assert [m["weight"] for m in meta["members"]] == [0.25, 0.75]


def noisy_image_features(n=300, seed=0) -> FeatureSet:
    """Text carries the label (2 classes); the image is pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    text = torch.randn(n, 6, generator=g) * 0.6
    text[:, 0] += y * 2.0
    image = torch.randn(n, 64, generator=g)
    splits = ["train"] * (n * 7 // 10) + ["val"] * (n * 15 // 100)
    splits += ["test"] * (n - len(splits))
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "split": splits,
                          "label_idx": y.numpy(), "label": [["a", "b"][i] for i in y.tolist()],
                          "present_image": True, "present_text": True})
    return FeatureSet(index=index, labels=["a", "b"], encoders={"image": {}, "text": {}},
                      vectors={"image": image, "text": text})


def auto_config(*overrides):
    return load_config(None, ["fusion.method=auto", "fusion.hidden_dim=32", "train.epochs=40",
                              "train.patience=5", "fusion.auto.folds=3", *overrides], env={})


def test_auto_picks_the_modality_that_beats_every_fusion():
    fs = noisy_image_features()
    seen = []
    selection = select_model(fs, auto_config("fusion.auto.candidates=[concat, late]",
                                             "fusion.auto.race=false"), seen.append)
    names = [c.name for c in selection.ranked]
    assert sorted(names) == ["concat", "ensemble", "late", "unimodal:image", "unimodal:text"]
    # The cheap linear probes of each modality race first, then the networks.
    assert [c.name for c in seen] == ["unimodal:image", "unimodal:text", "concat", "late", "ensemble"]
    assert all(c.penalty is not None for c in seen if c.kind == "unimodal")
    assert selection.winner.name == "unimodal:text", [(c.name, c.mean) for c in selection.ranked]
    assert selection.verdict().startswith("fusion did not help on this data: text alone scored")
    # Fold 0 tunes each candidate's settings and is never scored: 2 of the 3 folds are.
    assert all(len(c.fold_scores) == 2 for c in selection.ranked)


def test_auto_prefers_fusion_when_both_modalities_are_needed(tmp_path):
    fs = xor_features(n=300)
    fs.index["id"] = [f"r{i}" for i in range(len(fs.index))]
    selection = select_model(fs, auto_config("fusion.auto.candidates=[concat]", "fusion.auto.ensemble=false"))
    assert selection.winner.name == "concat"
    assert selection.winner.mean > selection.best("unimodal").mean + 0.2
    assert selection.verdict().startswith("fusion helped: concat scored")


def test_auto_saves_the_bagged_winner_and_the_unimodal_baselines(tmp_path):
    from crossfuse.features.store import write_feature_set

    fs = noisy_image_features()
    write_feature_set(tmp_path / "features", fs.index, fs.labels,
                      {"image": {"name": "x", "cache_key": "x", "dim": 64},
                       "text": {"name": "y", "cache_key": "y", "dim": 6}}, fs.vectors)
    cfg = auto_config("fusion.auto.candidates=[concat]", f"train.checkpoint_dir={tmp_path / 'ck'}",
                      "fusion.auto.calibration_fraction=0.2")
    result = train(cfg, tmp_path / "features", tmp_path / "model")
    assert result.method == "unimodal:text" and result.modalities == ["text"]
    head, meta = load_fusion_head(tmp_path / "model")
    assert isinstance(head, FusionEnsemble) and len(head.members) == 3  # one per fold
    assert list(meta["dims"]) == ["text"] and meta["chosen"] == "unimodal:text"
    assert 0.25 <= meta["temperature"] <= 20 and meta["calibration_rows"] > 0
    for m in ("image", "text"):
        assert load_fusion_head(tmp_path / "model" / BASELINES_DIR / m)[1]["dims"] == {
            m: fs.vectors[m].shape[1]}
    saved = json.loads((tmp_path / "model" / SELECTION_FILE).read_text())
    assert saved["winner"] == "unimodal:text" and saved["folds"] == 3
    assert [r["candidate"] for r in saved["ranked"]][0] == "unimodal:text"


def test_auto_refit_ships_one_model_trained_on_all_of_train_and_val(tmp_path):
    from crossfuse.features.store import write_feature_set

    fs = noisy_image_features()
    write_feature_set(tmp_path / "features", fs.index, fs.labels,
                      {"image": {"name": "x", "cache_key": "x", "dim": 64},
                       "text": {"name": "y", "cache_key": "y", "dim": 6}}, fs.vectors)
    cfg = auto_config("fusion.auto.candidates=[concat]", "fusion.auto.ensemble=false",
                      "fusion.auto.unimodal=false", "fusion.auto.ship=refit", "fusion.auto.trials=0",
                      "fusion.auto.calibration_fraction=0.2")
    result = train(cfg, tmp_path / "features", tmp_path / "model")
    head, meta = load_fusion_head(tmp_path / "model")
    assert isinstance(head, FusionHead) and meta["shipped"] == "refit"
    assert result.method == meta["chosen"] == "concat"
    # The same as training concat, with the settings its folds used (modality dropout
    # included), on every train+val row outside the calibration slice for the epochs its
    # fold models trained.
    from crossfuse.training.loop import fit_epochs

    selection = select_model(fs, cfg)
    rows = selection.plan.fit_rows()
    assert len(rows) < (fs.index["split"] != "test").sum()  # the calibration slice stays out
    split = np.full(len(fs.index), "unused", dtype=object)
    split[rows] = "train"
    everything = dataclasses.replace(fs, index=fs.index.assign(split=split))
    winner = selection.winner
    fusion, train_cfg = winner.settings
    assert fusion.method == "concat" and train_cfg.modality_dropout == {"image": 0.2, "text": 0.2}
    expected = fit_epochs(everything, fusion, train_cfg, cfg.seed, winner.epochs)
    for a, b in zip(expected.state_dict().values(), head.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_fusion_must_beat_the_best_modality_by_more_than_the_folds_noise():
    from crossfuse.training.selection import Candidate, rank

    def cand(name, scores):
        modalities = [name[len("unimodal:"):]] if name.startswith("unimodal:") else ["image", "text"]
        return Candidate(name, modalities, scores, np.zeros((0, 2)))

    text = cand("unimodal:text", [0.80, 0.70, 0.90, 0.75, 0.85])
    steady = cand("gmu", [0.82, 0.72, 0.92, 0.77, 0.87])        # +0.02 in every fold
    lucky = cand("mfb", [0.97, 0.62, 0.95, 0.72, 0.90])         # higher mean, gain is noise
    assert steady.mean > text.mean and lucky.mean > steady.mean
    assert [c.name for c in rank([lucky, text])] == ["unimodal:text", "mfb"]
    assert [c.name for c in rank([steady, text])][0] == "gmu"
    # The best candidate that earns its place wins; the others keep their order.
    assert [c.name for c in rank([lucky, steady, text])] == ["gmu", "mfb", "unimodal:text"]


def test_large_data_uses_a_single_holdout():
    fs = noisy_image_features(n=200)
    selection = select_model(fs, auto_config("fusion.auto.candidates=[concat]",
                                              "fusion.auto.holdout_above=100",
                                              "fusion.auto.unimodal=false"))
    assert selection.holdout and selection.folds == 1
    assert [len(c.fold_scores) for c in selection.ranked] == [1]  # fold 1, scored; fold 0 chose


def test_copies_never_land_in_two_folds_or_in_folds_and_calibration():
    from crossfuse.training.crossfit import CALIBRATION, fold_plan

    fs = noisy_image_features(n=300)
    rng = np.random.default_rng(0)
    # 40 samples appear two or three times under other ids: same content, same label.
    hashes = np.array([f"h{i}" for i in range(len(fs.index))], dtype=object)
    for original in rng.choice(200, 40, replace=False):
        for copy in rng.choice(200, rng.integers(1, 3), replace=False):
            hashes[copy] = hashes[original]
            fs.index.loc[copy, "label_idx"] = fs.index.loc[original, "label_idx"]
    fs.index["split"] = np.where(np.arange(300) < 255, "train", "test")
    fs.index["hash_image"] = hashes
    fs.index["hash_text"] = hashes
    plan = fold_plan(fs, auto_config("fusion.auto.folds=5", "fusion.auto.calibration_fraction=0.2"))
    groups = pd.Series(plan.folds, index=hashes[plan.rows])
    assert (groups.groupby(level=0).nunique() == 1).all()  # one fold (or the slice) per content
    assert (plan.folds == CALIBRATION).sum() > 0 and set(plan.folds) == {-1, 0, 1, 2, 3, 4}
    for f in plan.scored:  # no model trains on its own fold or on the calibration slice
        trains = plan.trains_on(f)
        assert not trains[plan.folds == f].any() and not trains[plan.folds == CALIBRATION].any()


def test_no_scored_fold_chose_its_own_settings_or_epochs():
    from crossfuse.training.crossfit import TUNING_FOLD, fold_plan, with_splits
    from crossfuse.training.loop import fit_epochs
    from crossfuse.training.selection import cross_validate

    fs = noisy_image_features(n=300)
    cfg = auto_config("fusion.auto.folds=4", "fusion.auto.modality_dropout=0")
    plan = fold_plan(fs, cfg)
    assert plan.scored == [1, 2, 3] and TUNING_FOLD not in plan.scored
    tuning = plan.tuning_view_splits()
    assert set(tuning[plan.folds == TUNING_FOLD]) == {"val"}  # choices are scored on fold 0 alone
    candidate = cross_validate(fs, "concat", cfg.fusion, cfg.train, cfg.seed, plan, trials=2)
    fusion, train_cfg = candidate.settings
    assert 1 <= candidate.epochs <= cfg.fusion.search.epochs
    # Every scored fold's model is exactly the chosen settings trained for the chosen
    # epochs on the other folds: no early stopping looked at the fold it is scored on.
    for model, f in zip(candidate.heads, plan.models, strict=True):
        view = with_splits(fs, plan.rows, np.where(plan.trains_on(f), "train", "unused"))
        expected = fit_epochs(view, fusion, train_cfg, cfg.seed + f, candidate.epochs)
        for a, b in zip(expected.state_dict().values(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b), f"fold {f}"
        assert np.isnan(candidate.oof[plan.folds == f]).all() == (f == TUNING_FOLD)
    assert len(candidate.fold_scores) == len(plan.scored)


def test_a_network_that_clearly_trails_a_probe_is_screened_out(tmp_path):
    from crossfuse.features.store import write_feature_set

    fs = noisy_image_features(n=300)
    write_feature_set(tmp_path / "features", fs.index, fs.labels,
                      {"image": {"name": "x", "cache_key": "x", "dim": 64},
                       "text": {"name": "y", "cache_key": "y", "dim": 6}}, fs.vectors)
    # Text is linearly separable: its probe leads. A network that learns nothing in one
    # epoch at lr 1e-7 is dropped after its first setting, before any search or cross-fit.
    cfg = auto_config("fusion.auto.candidates=[linear, late]", "train.lr=1e-7",
                      "fusion.search.epochs=1", "fusion.auto.trials=3")
    selection = select_model(fs, cfg)
    assert [s.name for s in selection.screened] == ["late"]
    assert "late" not in [c.name for c in selection.ranked]
    assert selection.screened[0].tuning_score < selection.screened[0].threshold
    train(cfg, tmp_path / "features", tmp_path / "model")
    saved = json.loads((tmp_path / "model" / SELECTION_FILE).read_text())
    assert [r["candidate"] for r in saved["screened_out"]] == ["late"]
    # Without the race the same network is cross-fitted and ranked (and loses).
    raced = select_model(fs, auto_config("fusion.auto.candidates=[linear, late]", "train.lr=1e-7",
                                         "fusion.search.epochs=1", "fusion.auto.race=false"))
    assert not raced.screened and "late" in [c.name for c in raced.ranked]
    # With no search (one setting, the config's) the race still applies.
    once = select_model(fs, auto_config("fusion.auto.candidates=[linear, late]", "train.lr=1e-7",
                                        "fusion.search.epochs=1", "fusion.auto.trials=0",
                                        "fusion.auto.ensemble=false"))
    assert [s.name for s in once.screened] == ["late"]


def test_a_holdout_selects_on_one_fold_and_scores_on_another():
    from crossfuse.training.crossfit import CALIBRATION, fold_plan

    fs = noisy_image_features(n=200)
    plan = fold_plan(fs, auto_config("fusion.auto.holdout_above=100"))
    assert plan.holdout and plan.models == plan.scored == [1]
    trains = plan.trains_on(1)
    assert not trains[np.isin(plan.folds, [0, 1, CALIBRATION])].any()
    assert trains[plan.folds == 2].all()
