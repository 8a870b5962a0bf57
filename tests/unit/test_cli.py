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
