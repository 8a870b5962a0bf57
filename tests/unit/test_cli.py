"""The crossfuse command: config printing, data generation, clear errors."""

import yaml

from pipelines.cli import main


def test_config_shows_overrides(capsys):
    assert main(["config", "--set", "fusion.method=late", "--data", "/x/my_set"]) == 0
    out = capsys.readouterr().out
    # The YAML starts at `seed:`: in the full suite a library thread left earlier has been seen
    # writing a partial line to stdout first (not crossfuse's output).
    cfg = yaml.safe_load(out[out.index("seed: "):])
    assert cfg["fusion"]["method"] == "late"
    assert (cfg["data"]["path"], cfg["data"]["name"]) == ("/x/my_set", None)


def test_run_on_missing_folder_fails_before_any_work(capsys, tmp_path):
    assert main(["run", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--data" in err


def test_bad_override_is_explained(capsys):
    assert main(["config", "--set", "fusion.method"]) == 2
    assert "is not key=value" in capsys.readouterr().err


def test_data_generate(tmp_path, capsys):
    assert main(["data", "generate", "--out", str(tmp_path / "d"), "--per-class", "2"]) == 0
    assert "wrote 12 samples (6 classes)" in capsys.readouterr().out


def test_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == "crossfuse 0.1.0"


def test_config_errors_are_one_line_per_key_and_name_the_valid_choices(capsys):
    assert main(["config", "--set", "fusion.hidden_dim=abc", "--set", "train.bogus=1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "crossfuse: error: bad config:"
    assert err[1].startswith("  fusion.hidden_dim: input should be a valid integer") and "'abc'" in err[1]
    assert err[2] == "  train.bogus: no such key (crossfuse config lists them all)"
    assert "Traceback" not in "\n".join(err) and "pydantic" not in "\n".join(err)

    # Names are checked against the registries at load, before any work.
    assert main(["config", "--set", "fusion.method=nope", "--set", "fusion.auto.candidates=[gmu,foo]",
                 "--set", "extract.encoders.image=resnet"]) == 2
    err = capsys.readouterr().err
    assert "fusion.method: 'nope' is not a fusion method; choose auto or one of attention, concat" in err
    assert "fusion.auto.candidates: ['foo'] are not fusion methods" in err
    assert ("extract.encoders.image: 'resnet' is not an encoder for image; choose "
            "efficientnet-lite0 or hf:<model id or folder>") in err


def test_models_reads_and_never_creates_a_store(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["models"]) == 1
    out = capsys.readouterr().out
    assert f"no MLflow store at {tmp_path / 'mlflow.db'}" in out
    assert list(tmp_path.iterdir()) == []  # nothing written
