"""Warm re-runs: validate and preprocess restore their output when nothing they read changed."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crossfuse import stages
from crossfuse.stage_records import record_key

pytestmark = pytest.mark.slow


def early_stages(cfg, out):
    """validate + preprocess in this process; returns the run's ``*.from_record`` params."""
    run_id, _ = stages.run_validate(cfg, None, out / "validation")
    result = stages.run_preprocess(cfg, run_id, out / "validation", out / "pre")
    params = mlflow.tracking.MlflowClient(cfg.mlflow.tracking_uri).get_run(run_id).data.params
    return {k: params[k] for k in ("validate.from_record", "preprocess.from_record")}, result


def test_unchanged_data_and_settings_restore_the_same_outputs(sample_dataset, make_config,
                                                              tmp_path):
    cfg = make_config(sample_dataset)
    first, result = early_stages(cfg, tmp_path / "first")
    assert first == {"validate.from_record": "False", "preprocess.from_record": "False"}

    # Only the fusion settings change: both early stages come back from their records.
    again, restored = early_stages(make_config(sample_dataset, "fusion.method=concat"),
                                   tmp_path / "second")
    assert again == {"validate.from_record": "True", "preprocess.from_record": "True"}
    assert restored == result
    for name in ("validation/report.json", "validation/rejects.csv"):
        assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "first" / name).read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "second/pre/samples.parquet"),
                                  pd.read_parquet(tmp_path / "first/pre/samples.parquet"))
    images = sorted(p.name for p in (tmp_path / "first/pre/images").iterdir())
    assert sorted(p.name for p in (tmp_path / "second/pre/images").iterdir()) == images


def test_a_changed_file_or_preprocess_setting_is_recomputed(sample_dataset, make_config,
                                                            tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    early_stages(make_config(data), tmp_path / "first")

    # A preprocess setting: validation's record still holds, preprocess runs again.
    resized, result = early_stages(make_config(data, "preprocess.image_size=40"),
                                   tmp_path / "resized")
    assert resized == {"validate.from_record": "True", "preprocess.from_record": "False"}
    pixels = np.load(next((tmp_path / "resized/pre/images").glob("shard-*.npy")))
    assert pixels.shape[1:] == (40, 40, 3)

    # One image's bytes (same name, same size of file list): both stages run again.
    victim = sorted((data / "images").iterdir())[0]
    Image.new("RGB", (64, 64), (250, 0, 0)).save(victim)
    changed, _ = early_stages(make_config(data), tmp_path / "changed")
    assert changed == {"validate.from_record": "False", "preprocess.from_record": "False"}


def test_the_key_ignores_later_stages_and_follows_early_ones(make_config, sample_dataset):
    base = make_config(sample_dataset)
    key = record_key("preprocess", base, [sample_dataset])
    for later in ("fusion.method=gmu", "train.epochs=3", "evaluate.permutation_repeats=0",
                  "extract.cache_dir=/elsewhere", "storage.root=s3://bucket/state"):
        assert record_key("preprocess", make_config(sample_dataset, later), [sample_dataset]) == key
    for early in ("seed=1", "preprocess.lowercase_text=true", "validation.on_error=drop"):
        assert record_key("preprocess", make_config(sample_dataset, early),
                          [sample_dataset]) != key
    assert record_key("validate", base, [sample_dataset]) != key
