"""The default dataset: deterministic, DVC-consistent, and a task that needs both modalities."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from crossfuse.data.sample import SHAPES, TIMES, class_labels, generate_sample_dataset

REPO = Path(__file__).resolve().parents[3]


def test_regeneration_is_byte_identical(tmp_path):
    a = generate_sample_dataset(tmp_path / "a", per_class=5)
    b = generate_sample_dataset(tmp_path / "b", per_class=5)
    cmp = filecmp.dircmp(a.root, b.root)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    assert filecmp.cmp(a.root / "images" / "s00007.png", b.root / "images" / "s00007.png",
                       shallow=False)


def test_label_is_shape_and_time(tmp_path):
    ds = generate_sample_dataset(tmp_path / "d", per_class=4)
    frame = pd.read_csv(ds.root / "manifest.csv")
    assert len(frame) == 4 * len(SHAPES) * len(TIMES)
    assert sorted(frame["label"].unique()) == sorted(class_labels())
    # The text carries the time of day only: no caption names a shape.
    assert not frame["text"].str.contains("|".join(SHAPES)).any()


def test_default_generation_matches_data_dvc(tmp_path):
    """A fresh clone that regenerates data/ gets exactly the version data.dvc names."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(dvc + ["init", "-q"], cwd=repo, check=True)
    generate_sample_dataset(repo / "data")
    subprocess.run(dvc + ["add", "-q", "data"], cwd=repo, check=True)
    ours = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]
    committed = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    assert (ours["md5"], ours["nfiles"]) == (committed["md5"], committed["nfiles"])
    shutil.rmtree(repo)
