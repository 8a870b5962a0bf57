"""The team path for data: a DVC remote on S3-compatible storage (MinIO, S3), over HTTP.

A real S3 API server (moto's, on a loopback port) stands in for MinIO: the sample data is
pushed there with DVC, and the steps' pull reads it back with the endpoint from
``data.remote_options`` and the credentials from the environment, as pods get them from
``pipeline.secret_env``.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import S3_CREDENTIALS as CREDENTIALS
from conftest import s3_server

from crossfuse.data.dvc import DvcFetchError, materialise_data, pin_data_version
from pipelines.cli import main


def dvc(*args, cwd):
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def s3_remote(tmp_path_factory, sample_dataset):
    """(remote URL, endpoint, pushed .dvc file) for the sample data on a local S3 server."""
    tmp = tmp_path_factory.mktemp("s3")
    with pytest.MonkeyPatch.context() as env:
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        with s3_server(tmp, "team-data") as endpoint:
            repo = tmp / "repo"
            repo.mkdir()
            shutil.copytree(sample_dataset, repo / "data")
            dvc("init", "--no-scm", "-q", cwd=repo)
            dvc("add", "-q", "data", cwd=repo)
            dvc("remote", "add", "-d", "team", "s3://team-data/crossfuse", cwd=repo)
            dvc("remote", "modify", "team", "endpointurl", endpoint, cwd=repo)
            dvc("push", "-q", cwd=repo)
            yield "s3://team-data/crossfuse", endpoint, repo / "data.dvc"


@pytest.fixture
def aws_env(monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)


def test_the_steps_pull_the_pinned_version_from_s3(s3_remote, aws_env, make_config, tmp_path,
                                                   sample_dataset):
    remote, endpoint, dvc_file = s3_remote
    cfg = pin_data_version(make_config(tmp_path / "not-here", f"data.remote={remote}",
                                       f"data.remote_options={{endpointurl: {endpoint}}}",
                                       f"data.dvc_file={dvc_file}"))
    local = Path(materialise_data(cfg).data.path)
    want = sorted(p.relative_to(sample_dataset) for p in sample_dataset.rglob("*") if p.is_file())
    assert sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file()) == want
    assert all((sample_dataset / f).read_bytes() == (local / f).read_bytes() for f in want)


def test_a_bucket_without_the_version_fails_with_dvcs_reason_and_leaves_nothing(
        s3_remote, aws_env, make_config, tmp_path):
    _, endpoint, dvc_file = s3_remote
    cfg = pin_data_version(make_config(tmp_path / "not-here", "data.remote=s3://team-data/other",
                                       f"data.remote_options={{endpointurl: {endpoint}}}",
                                       f"data.dvc_file={dvc_file}"))
    with pytest.raises(DvcFetchError, match="dvc pull"):
        materialise_data(cfg)
    fetched = Path(cfg.data.fetch_dir)
    assert not fetched.exists() or not any(fetched.iterdir())  # no partial copy left behind


def test_fetch_command_takes_remote_options(s3_remote, aws_env, tmp_path, capsys):
    remote, endpoint, dvc_file = s3_remote
    assert main(["data", "fetch", "--dvc-file", str(dvc_file), "--remote", remote,
                 "--remote-option", f"endpointurl={endpoint}", "--out", str(tmp_path / "got")]) == 0
    assert (tmp_path / "got" / "manifest.csv").is_file()
    assert main(["data", "fetch", "--dvc-file", str(dvc_file), "--remote", remote,
                 "--remote-option", "endpointurl", "--out", str(tmp_path / "x")]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
