"""The typed config: defaults, overrides, environment, validation errors."""

from pathlib import Path

import pytest

from crossfuse.config import ConfigError, RunConfig, config_summary, load_config
from crossfuse.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_set_overrides_parse_types():
    cfg = load_config(None, ["fusion.method=late", "train.epochs=5", "train.lr=0.01"], env={})
    assert (cfg.fusion.method, cfg.train.epochs, cfg.train.lr) == ("late", 5, 0.01)


def test_mlflow_tracking_uri_env_overrides_file_but_not_set():
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert load_config(REPO / "configs/default.yaml", env=env).mlflow.tracking_uri == env[
        "MLFLOW_TRACKING_URI"]
    cfg = load_config(None, ["mlflow.tracking_uri=sqlite:///x.db"], env=env)
    assert cfg.mlflow.tracking_uri == "sqlite:///x.db"


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match=r"fusion.methd: no such key"):
        load_config(None, ["fusion.methd=late"], env={})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="preprocess.split: split fractions must be positive and sum to 1"):
        load_config(None, ["preprocess.split.train=0.9"], env={})


def test_unknown_modality_is_an_error():
    with pytest.raises(ConfigError, match=r"extract.encoders: unknown modalities \['smell'\]"):
        load_config(None, ["extract.encoders.smell=nose"], env={})


def test_missing_config_file_names_it(tmp_path):
    with pytest.raises(UserError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml", env={})


def test_resolved_paths_are_absolute_and_json_roundtrips(tmp_path):
    cfg = load_config(None, env={}).resolved(tmp_path)
    assert cfg.data.path == str(tmp_path / "data")
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_names_derive_from_dataset_folder():
    cfg = load_config(None, ["data.path=/x/openmoji_unicode14"], env={})
    assert cfg.model_name() == "crossfuse-openmoji_unicode14"
    assert config_summary(cfg)["fusion.method"] == "auto"  # the default: choose by cross-validation


def test_default_yaml_is_valid():
    cfg = load_config(REPO / "configs/default.yaml", env={})
    assert cfg.model_name() == "crossfuse-sample"
    assert cfg.modalities == ["image", "text"]


def test_encoder_names_are_checked_at_load_against_the_registry():
    # Unknown names, and a known encoder on the wrong modality, stop at load (before preflight).
    for name in ("resnet", "minilm"):
        with pytest.raises(ConfigError, match=f"extract.encoders.image: '{name}' is not an encoder "
                                              f"for image; choose efficientnet-lite0 or hf:"):
            load_config(None, [f"extract.encoders.image={name}"], env={})
    assert load_config(None, ["extract.encoders.image=hf:/any/folder"], env={})  # checked by preflight
