"""Fetching a pinned data version from a real DVC remote, without the git repository."""

import shutil
import subprocess
import sys

import pytest

from crossfuse.dvc_data import DvcFetchError, fetch_dvc_data


def dvc(*args, cwd):
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def pushed(tmp_path, sample_dataset):
    """The sample dataset added to a DVC repo and pushed to a local remote."""
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
    with pytest.raises(ValueError, match="exactly one output"):
        fetch_dvc_data("outs: []\n", str(tmp_path), tmp_path / "x")


def test_fetch_command(pushed, tmp_path, capsys):
    from crossfuse.cli import main

    text, remote, _ = pushed
    (tmp_path / "pinned.dvc").write_text(text)
    assert main(["data", "fetch", "--dvc-file", str(tmp_path / "pinned.dvc"), "--remote", remote,
                 "--out", str(tmp_path / "got")]) == 0
    assert (tmp_path / "got" / "manifest.csv").is_file()
    assert "fetched" in capsys.readouterr().out
