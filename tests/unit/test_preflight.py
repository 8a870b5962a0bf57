"""Fail fast: an unreachable MLflow, a missing encoder, an unwritable folder stop a run at once."""

import pytest
from conftest import free_port

from crossfuse.preflight import PreflightError, preflight, problems
from pipelines.cli import main


def test_a_runnable_config_has_no_problems(sample_dataset, make_config):
    assert problems(make_config(sample_dataset)) == []


@pytest.mark.parametrize("override, words", [
    (lambda tmp: f"mlflow.tracking_uri=http://127.0.0.1:{free_port()}",
     ["is unreachable", "mlflow server --host 127.0.0.1"]),
    (lambda tmp: "extract.encoders.text=hf:/no/such/model", ["hf:/no/such/model", "does not exist"]),
    (lambda tmp: f"pipeline.pipeline_root={tmp / 'a-file' / 'out'}",
     ["cannot write pipeline output (pipeline.pipeline_root)", "Not a directory"]),
    (lambda tmp: f"extract.cache_dir={tmp / 'a-file'}", ["feature cache (extract.cache_dir)"]),
    (lambda tmp: ("data.remote=s3://bucket/x", f"data.fetch_dir={tmp / 'a-file'}"),
     ["pulled data (data.fetch_dir)"]),
    (lambda tmp: f"storage.root={(tmp / 'a-file' / 'state').as_uri()}",
     ["storage.root file://", "cannot be written", "storage.options"]),
])
def test_each_problem_is_named_with_its_fix(override, words, sample_dataset, make_config,
                                            tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    overrides = override(tmp_path)
    cfg = make_config(sample_dataset, *([overrides] if isinstance(overrides, str) else overrides))
    with pytest.raises(PreflightError) as err:
        preflight(cfg)
    for w in words:
        assert w in str(err.value)


def test_run_stops_before_any_work(sample_dataset, tmp_path, capsys):
    port = free_port()
    code = main(["run", "--data", str(sample_dataset),
                 "--set", f"mlflow.tracking_uri=http://127.0.0.1:{port}",
                 "--set", f"pipeline.pipeline_root={tmp_path / 'kfp'}",
                 "--set", f"extract.cache_dir={tmp_path / 'cache'}",
                 "--set", f"train.checkpoint_dir={tmp_path / 'ckpt'}",
                 "--set", f"mlflow.artifact_root={tmp_path / 'art'}"])
    assert code == 2
    assert f"127.0.0.1:{port} is unreachable" in capsys.readouterr().err
    assert not any((tmp_path / "kfp").iterdir())  # no stage ran
