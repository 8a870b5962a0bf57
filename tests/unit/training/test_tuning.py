"""Search in the train stage: seeded, one nested MLflow run per trial, settings saved with the model."""

import json

import mlflow
from mlflow.tracking import MlflowClient

from crossfuse import stages
from crossfuse.config import RunConfig
from crossfuse.features.store import read_feature_set
from crossfuse.training.tuning import search


def test_search_is_seeded(sample_dataset, make_config, tmp_path):
    from crossfuse.data.preprocess import preprocess
    from crossfuse.features.extract import extract

    cfg = make_config(sample_dataset, "fusion.method=lowrank")
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    extract(cfg, tmp_path / "pre", tmp_path / "f")
    fs = read_feature_set(tmp_path / "f")
    a = search(fs, cfg.fusion, cfg.train, seed=3, trials=3, epochs=3)
    b = search(fs, cfg.fusion, cfg.train, seed=3, trials=3, epochs=3)
    assert a.params == b.params and a.value == b.value
    assert "rank" in a.params and a.fusion.options["rank"] == a.params["rank"]
    assert a.train.epochs == cfg.train.epochs  # the final fit gets the full budget
    # The small-data regularisers are part of every search, and reach the chosen configs.
    assert (a.fusion.bottleneck, a.fusion.input_dropout, a.train.label_smoothing) == (
        a.params["bottleneck"], a.params["input_dropout"], a.params["label_smoothing"])
    assert 1e-6 <= a.params["weight_decay"] <= 1e-1


def test_first_trial_is_the_starting_config(sample_dataset, make_config, tmp_path):
    """With a budget of one trial the search returns the config as given: no worse than no search."""
    from crossfuse.data.preprocess import preprocess
    from crossfuse.features.extract import extract

    cfg = make_config(sample_dataset, "fusion.method=mfb", "fusion.options.factor=2",
                      "fusion.dropout=0.35", "train.lr=0.002", "train.label_smoothing=0.1")
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    extract(cfg, tmp_path / "pre", tmp_path / "f")
    fs = read_feature_set(tmp_path / "f")
    seen = []
    one = search(fs, cfg.fusion, cfg.train, seed=0, trials=1, epochs=2,
                 on_trial=lambda n, params, value: seen.append((params, value)))
    assert seen[0][0] == {"factor": 2, "hidden_dim": cfg.fusion.hidden_dim, "dropout": 0.35,
                          "bottleneck": 0, "input_dropout": 0.0, "lr": 0.002,
                          "weight_decay": cfg.train.weight_decay, "label_smoothing": 0.1}
    assert (one.fusion.options["factor"], one.fusion.dropout, one.train.lr) == (2, 0.35, 0.002)
    more = search(fs, cfg.fusion, cfg.train, seed=0, trials=3, epochs=2)
    assert more.value >= one.value


def test_train_stage_logs_trials_as_nested_runs(sample_dataset, make_config, tmp_path):
    cfg = make_config(sample_dataset, "fusion.method=concat", "fusion.search.trials=3",
                      "fusion.search.epochs=3")
    run_id, _ = stages.run_validate(cfg, None, tmp_path / "v")
    stages.run_preprocess(cfg, run_id, tmp_path / "v", tmp_path / "pre")
    stages.run_extract(cfg, run_id, tmp_path / "pre", tmp_path / "f")
    result = stages.run_train(cfg, run_id, tmp_path / "f", tmp_path / "model")
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name())
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(r.info.run_name for r in children) == ["trial-000", "trial-001", "trial-002"]
    assert all("train/val_macro_f1" in r.data.metrics for r in children)
    parent = client.get_run(run_id).data.params
    assert float(parent["search.best.lr"]) == result.searched["lr"]
    saved = RunConfig.model_validate(json.loads((tmp_path / "model" / "run_config.json").read_text()))
    assert saved.train.lr == result.searched["lr"]
    assert saved.fusion.dropout == result.searched["dropout"]
