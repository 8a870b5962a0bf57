"""Run state on a storage root: what one task writes, a task on another machine reads.

Each "task" here attaches with its own empty working folder (``storage.work_dir``), as a pod
starts with an empty disk; the root is a folder reached through fsspec (``file://``). The
same code runs against S3 in ``tests/pipeline/test_local_run.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crossfuse import storage
from crossfuse.config import load_config
from crossfuse.features.store import FeatureCache
from crossfuse.stage_records import restore, store
from crossfuse.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def task(tmp_path):
    """``task(name)``: the config of a new task with an empty working folder on one root."""
    root = (tmp_path / "bucket").as_uri()

    def start(name: str):
        storage.detach_all()  # a new process knows no mirrors
        cfg = load_config(None, [f"storage.root={root}",
                                 f"storage.work_dir={tmp_path / name}"], env={})
        return storage.attach(cfg)

    yield start
    storage.detach_all()


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_attach_points_the_state_folders_at_the_tasks_own_copy(task, tmp_path):
    cfg = task("pod-a")
    assert cfg.extract.cache_dir == str(tmp_path / "pod-a" / "features")
    assert cfg.train.checkpoint_dir == str(tmp_path / "pod-a" / "checkpoints")
    assert cfg.pipeline.stage_cache_dir == str(tmp_path / "pod-a" / "stages")
    assert storage.remote_url(Path(cfg.extract.cache_dir) / "x") == \
        (tmp_path / "bucket" / "features" / "x").as_uri()
    assert storage.remote_url(tmp_path / "elsewhere") is None  # not state: never sent


def test_feature_vectors_written_by_one_task_are_read_by_the_next(task, tmp_path):
    first = FeatureCache(Path(task("pod-a").extract.cache_dir), "enc:v1")
    first.put(["h1", "h2"], {"vectors": torch.arange(6.0).reshape(2, 3)})
    second = FeatureCache(Path(task("pod-b").extract.cache_dir), "enc:v1")  # an empty disk
    assert "h1" in second and "h2" in second
    assert torch.equal(second.get(["h2"])["vectors"], torch.tensor([[3.0, 4.0, 5.0]]))
    # Only whole files reach the root: no temporary names.
    assert not [f for f in files(tmp_path / "bucket") if "/." in f or f.startswith(".")]


def test_a_checkpoint_resumes_on_another_task_and_its_latest_epoch_wins(task, tmp_path):
    path = Path(task("pod-a").train.checkpoint_dir) / "k.pt"
    save_checkpoint(path, {"key": "k", "epoch": 1})
    save_checkpoint(path, {"key": "k", "epoch": 2})  # rewritten each epoch: sent each time
    retry = Path(task("pod-b").train.checkpoint_dir) / "k.pt"
    assert load_checkpoint(retry, "k")["epoch"] == 2


def test_a_stage_record_is_read_only_once_complete(task, tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.json").write_text("{}")
    (out / "sub" / "b.txt").write_text("b")
    store(Path(task("pod-a").pipeline.stage_cache_dir), "preprocess", "key1", out)
    restored = tmp_path / "restored"
    assert restore(Path(task("pod-b").pipeline.stage_cache_dir), "preprocess", "key1", restored)
    assert files(restored) == ["a.json", "sub/b.txt"]
    marker = tmp_path / "bucket" / "stages" / "preprocess" / "key1.done"
    assert json.loads(marker.read_text()) == {"files": ["a.json", "sub/b.txt"]}
    # A record whose writer died before its marker (files sent, no .done) is not trusted.
    marker.unlink()
    assert not restore(Path(task("pod-c").pipeline.stage_cache_dir), "preprocess", "key1",
                       tmp_path / "again")


def test_without_a_root_nothing_leaves_the_local_folders(tmp_path):
    storage.detach_all()
    cfg = load_config(None, [f"extract.cache_dir={tmp_path / 'cache'}"], env={})
    assert storage.attach(cfg) is cfg
    cache = FeatureCache(tmp_path / "cache", "enc:v1")
    cache.put(["h"], {"vectors": torch.zeros(1, 2)})
    assert storage.push(tmp_path / "cache") == 0 and storage.pull(tmp_path / "cache") == 0
