"""What a run records about the code and the data it ran on."""

import subprocess
from pathlib import Path

from crossfuse.tracking import data_version


def test_the_code_version_is_crossfuse_s_commit_wherever_the_data_lives(tmp_path):
    # Data outside any git repository used to record git.commit "unknown": the commit was
    # looked up in the data's folder instead of the code's.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("id,label\nx,a\n")
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    version = data_version(tmp_path / "data")
    assert version["git.commit"] == head
    assert version["data.manifest_sha256"] != "missing"
