"""The crossfuse command: config printing, data generation, clear errors."""

import pytest
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


def user_error(capsys, argv: list[str]) -> str:
    """Run a command that must stop on a user's mistake: exit 2, the message alone (at most
    three lines, no traceback). Returns stderr."""
    import pytest

    try:
        code = main(argv)
    except SystemExit as done:  # argparse's own errors
        code = done.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err and "\x1b[" not in out + err
    assert 1 <= len(err.strip().splitlines()) <= 3, err
    if not err.startswith("crossfuse"):
        pytest.fail(f"not crossfuse's message: {err}")
    return err


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch):
    """The working directory is an empty folder; no tracking URI from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_models_reads_and_never_creates_a_store(in_empty_folder, capsys):
    err = user_error(capsys, ["models"])
    assert f"no MLflow store at {in_empty_folder / 'mlflow.db'}" in err and "make run" in err
    assert list(in_empty_folder.iterdir()) == []  # nothing written


def test_an_unknown_model_is_named_with_the_close_ones(in_empty_folder, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{in_empty_folder / 'mlflow.db'}")
    MlflowClient().create_registered_model("crossfuse-sample")
    capsys.readouterr()  # the new store's own log lines
    err = user_error(capsys, ["models", "--model", "crossfuse-sampel"])
    assert "no registered model 'crossfuse-sampel'" in err
    assert "did you mean 'crossfuse-sample'?" in err
    err = user_error(capsys, ["promote", "--model", "nope", "--version", "1"])
    assert "no registered model 'nope'" in err and "registered: crossfuse-sample" in err


@pytest.mark.parametrize("data", ["missing", "empty"])
def test_predict_checks_the_data_folder_first_and_creates_no_store(data, in_empty_folder, capsys):
    (in_empty_folder / "empty").mkdir()
    err = user_error(capsys, ["predict", "--data", data])
    assert ("does not exist; pass --data" in err if data == "missing"
            else "empty/manifest.csv not found" in err)
    assert not (in_empty_folder / "mlflow.db").exists()


def test_predict_needs_an_existing_store_and_model(in_empty_folder, sample_dataset, capsys):
    err = user_error(capsys, ["predict", "--data", str(sample_dataset)])
    assert "no MLflow store at" in err
    assert not (in_empty_folder / "mlflow.db").exists()  # never a new, empty store

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{in_empty_folder / 'mlflow.db'}")
    MlflowClient().create_registered_model("crossfuse-other")
    capsys.readouterr()
    err = user_error(capsys, ["predict", "--data", str(sample_dataset)])
    assert "model crossfuse-data@champion not found" in err and "make run" in err


@pytest.mark.parametrize("argv, words", [
    (["rn"], "'rn' is not a crossfuse command; did you mean 'run'?"),
    (["bench", "smal-data"], "did you mean 'small-data'?"),
    (["config", "--set", "train.epoch=3"], "train.epoch: no such key; did you mean 'train.epochs'?"),
    (["config", "--set", "fusion.auto.candidate=[late]"], "did you mean 'fusion.auto.candidates'?"),
])
def test_a_typo_gets_a_did_you_mean(argv, words, capsys):
    assert words in user_error(capsys, argv)


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("fusion:\n  method: late\n train:\n  epochs: 3\n")
    err = user_error(capsys, ["config", "--config", str(config)])
    assert f"{config}:3:2: YAML syntax error" in err
    config.write_text("- just\n- a list\n")
    assert "a config is a YAML mapping" in user_error(capsys, ["config", "--config", str(config)])


def test_a_bug_keeps_its_traceback_and_says_it_is_one(tmp_path, capsys, monkeypatch):
    import crossfuse.data.sample

    def broken(*args, **kwargs):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(crossfuse.data.sample, "generate_sample_dataset", broken)
    assert main(["data", "generate", "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: an internal mistake" in err
    assert "this is a bug in crossfuse" in err


def test_the_review_hint_names_the_command_for_the_store_the_run_used(tmp_path, monkeypatch):
    from pipelines.cli import duration_words, ui_url

    monkeypatch.chdir(tmp_path)
    page = "#/experiments/1/runs/abc?workflowType=machine_learning"
    assert ui_url(f"sqlite:///{tmp_path / 'mlflow.db'}", "1", "abc") == (
        f"`make ui`, then http://127.0.0.1:5000/{page}")
    assert ui_url("sqlite:////data/team.db", "1", "abc").startswith(
        "`crossfuse ui --set mlflow.tracking_uri=sqlite:////data/team.db`, then ")
    assert ui_url("http://mlflow:5000", "1", "abc") == f"http://mlflow:5000/{page}"
    assert (duration_words(276.4), duration_words(52.2)) == ("4 min 36 s", "52 s")


@pytest.mark.parametrize("setting, words", [
    ("train.epochs=-1", "train.epochs: input should be greater than or equal to 1"),
    ("train.batch_size=0", "train.batch_size: input should be greater than or equal to 1"),
    ("preprocess.image_size=0", "preprocess.image_size: input should be greater than or equal to 8"),
    ("train.lr=-1", "train.lr: input should be greater than 0"),
    ("fusion.dropout=1.5", "fusion.dropout: input should be less than 1"),
    ("validation.min_samples_per_class=0", "validation.min_samples_per_class: input should be"),
    ("registry.metric=test_nonexistent", "'test_nonexistent' is not a metric the evaluation logs"),
])
def test_settings_out_of_range_stop_at_load(setting, words, capsys):
    assert words in user_error(capsys, ["config", "--set", setting])
