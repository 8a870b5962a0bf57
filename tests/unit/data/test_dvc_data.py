"""Fetching a pinned data version from a real DVC remote, without the git repository."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crossfuse.data.dvc import DvcFetchError, fetch_dvc_data, materialise_data, pin_data_version
from crossfuse.errors import UserError


def dvc(*args, cwd):
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, sample_dataset):
    """The sample dataset added to a DVC repo and pushed to a local remote. Do not modify."""
    tmp_path = tmp_path_factory.mktemp("dvc")
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    shutil.copytree(sample_dataset, repo / "data")
    dvc("init", "--no-scm", "-q", cwd=repo)
    dvc("add", "-q", "data", cwd=repo)
    dvc("remote", "add", "-d", "r", str(remote), cwd=repo)
    dvc("push", "-q", cwd=repo)
    return (repo / "data.dvc").read_text(), str(remote), repo / "data"


def test_fetch_gives_the_pinned_files(pushed, tmp_path):
    text, remote, original = pushed
    out = fetch_dvc_data(text, remote, tmp_path / "fetched")
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (original / f).read_bytes() for f in files)


def test_a_version_the_remote_lacks_is_a_clear_error(pushed, tmp_path):
    text, remote, _ = pushed
    unknown = text.replace(text.split("md5: ")[1][:32], "0" * 32, 1)
    with pytest.raises(DvcFetchError, match="dvc pull"):
        fetch_dvc_data(unknown, remote, tmp_path / "fetched")
    assert not (tmp_path / "fetched").exists()


def test_the_dvc_file_must_pin_one_output(tmp_path):
    with pytest.raises(UserError, match="exactly one output"):
        fetch_dvc_data("outs: []\n", str(tmp_path), tmp_path / "x")


def test_fetch_command(pushed, tmp_path, capsys):
    from pipelines.cli import main

    text, remote, _ = pushed
    (tmp_path / "pinned.dvc").write_text(text)
    assert main(["data", "fetch", "--dvc-file", str(tmp_path / "pinned.dvc"), "--remote", remote,
                 "--out", str(tmp_path / "got")]) == 0
    assert (tmp_path / "got" / "manifest.csv").is_file()
    assert "fetched" in capsys.readouterr().out


def remote_config(make_config, pushed, tmp_path, *overrides):
    """A run config pinned to the pushed version, whose data.path does not exist on this disk."""
    text, remote, _ = pushed
    (tmp_path / "gone.dvc").write_text(text)
    return make_config(tmp_path / "gone", f"data.remote={remote}",
                       f"data.dvc_file={tmp_path / 'gone.dvc'}", *overrides)


def test_pin_copies_the_dvc_output_and_keeps_the_dataset_name(make_config, pushed, tmp_path):
    cfg = pin_data_version(remote_config(make_config, pushed, tmp_path))
    assert cfg.data.pinned == yaml.safe_load(pushed[0])["outs"][0]
    assert cfg.data.name == "sample"
    assert pin_data_version(cfg) == cfg  # pinned once, at submission or run start


def test_pin_without_the_dvc_file_names_it_and_the_fix(make_config, tmp_path):
    cfg = make_config(tmp_path / "data", "data.remote=s3://bucket/x")
    with pytest.raises(UserError, match=r"data\.dvc does not exist: track the data with `dvc add"):
        pin_data_version(cfg)


def test_no_remote_means_the_local_folder(make_config, sample_dataset):
    cfg = make_config(sample_dataset)
    assert pin_data_version(cfg) is cfg and materialise_data(cfg) is cfg


def test_materialise_pulls_the_pinned_version_once(make_config, pushed, tmp_path):
    text, remote, original = pushed
    remote = shutil.copytree(remote, tmp_path / "remote")  # this test deletes it
    cfg = pin_data_version(remote_config(make_config, (text, str(remote), original), tmp_path))
    local = materialise_data(cfg)
    path = Path(local.data.path)
    assert path.parent == Path(cfg.data.fetch_dir)
    assert path.name == cfg.data.pinned["md5"].removesuffix(".dir")
    assert (path / "manifest.csv").read_bytes() == (original / "manifest.csv").read_bytes()
    assert local.data.dataset_name() == "sample"
    shutil.rmtree(remote)  # a second step on the same disk does not pull again
    assert materialise_data(cfg).data.path == local.data.path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial folder left


def test_an_unpinned_remote_config_is_refused(make_config, tmp_path):
    with pytest.raises(UserError, match="no version is pinned"):
        materialise_data(make_config(tmp_path / "data", "data.remote=s3://bucket/x"))


def test_validate_and_preprocess_read_the_pinned_version_from_the_remote(make_config, pushed,
                                                                        tmp_path):
    """The first two steps, as a cluster pod runs them: data.path is not on this disk."""
    import mlflow

    from crossfuse import stages

    cfg = pin_data_version(remote_config(make_config, pushed, tmp_path))
    run_id, report = stages.run_validate(cfg, None, tmp_path / "validation")
    rows = len((pushed[2] / "manifest.csv").read_text().strip().splitlines()) - 1
    assert report.n_rows == report.n_valid == rows
    tags = mlflow.get_run(run_id).data.tags
    assert tags["data.dvc_md5"] == cfg.data.pinned["md5"] and tags["data.dvc_remote"] == pushed[1]
    result = stages.run_preprocess(cfg, run_id, tmp_path / "validation", tmp_path / "pre")
    assert result.n_samples == rows
