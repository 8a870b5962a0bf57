"""Crashes: a training or an extraction killed with SIGKILL continues where it stopped.

Each test starts the work in a child process, kills it with ``kill -9`` once some
progress is on disk, reruns the same work here, and checks that (1) only the
unfinished part is redone and (2) the result equals an uninterrupted run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crossfuse.data.preprocess import preprocess
from crossfuse.features.extract import extract
from crossfuse.features.store import FeatureCache, read_feature_set
from crossfuse.training.checkpoint import checkpoint_key
from crossfuse.training.train import train

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from crossfuse.config import RunConfig
    cfg = RunConfig.from_json(Path(sys.argv[2]).read_text())
    if sys.argv[1] == "train":
        from crossfuse.training.train import train
        train(cfg, Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        from crossfuse.encoders import build_encoder
        from crossfuse.features.extract import extract

        class Slow:  # the real encoder, slowed so the kill lands mid-shard
            def __init__(self, inner):
                self.inner = inner
            def __getattr__(self, name):
                return getattr(self.inner, name)
            def encode(self, items):
                time.sleep(0.4)
                return self.inner.encode(items)

        encoders = {m: Slow(build_encoder(n, m)) for m, n in cfg.extract.encoders.items()}
        extract(cfg, Path(sys.argv[3]), Path(sys.argv[4]), encoders=encoders)
""")


def run_child(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (fail if it ends or times out first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"child ended before the kill: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("child made no progress in time")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def features(sample_dataset, make_config, tmp_path):
    cfg = make_config(sample_dataset)
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    extract(cfg, tmp_path / "pre", tmp_path / "features")
    return tmp_path / "features"


def test_training_killed_mid_run_resumes_from_its_checkpoint(features, sample_dataset,
                                                             make_config, tmp_path):
    # Batches of 2 make epochs slow enough to kill inside one.
    cfg = make_config(sample_dataset, "fusion.method=concat", "train.epochs=60", "train.patience=60",
                      "train.batch_size=2", f"train.checkpoint_dir={tmp_path / 'ckpt'}")
    config_file = tmp_path / "cfg.json"
    config_file.write_text(cfg.to_json())
    fs = read_feature_set(features)
    key = checkpoint_key(fs, cfg.fusion, cfg.train, cfg.seed, fs.modalities)
    ckpt = tmp_path / "ckpt" / f"{key}.pt"

    def epochs_done() -> int:
        try:
            return len(torch.load(ckpt, weights_only=True)["history"])
        except (FileNotFoundError, RuntimeError, EOFError):
            return 0

    child = run_child("train", config_file, features, tmp_path / "killed")
    kill_when(child, lambda: epochs_done() >= 5)
    killed_at = epochs_done()
    assert 5 <= killed_at < 60
    assert not (tmp_path / "killed" / "fusion_spec.json").exists()  # no half-made model

    seen = []
    resumed = train(cfg, features, tmp_path / "resumed", on_epoch=lambda e, m: seen.append(e))
    assert seen == list(range(1, 61))  # the killed epochs are replayed to the logger, then on
    assert resumed.epochs_run == 60 and not ckpt.exists()  # a finished training drops it

    fresh_cfg = cfg.model_copy(deep=True)
    fresh_cfg.train.checkpoint_dir = str(tmp_path / "fresh-ckpt")
    fresh = train(fresh_cfg, features, tmp_path / "fresh")
    assert resumed.best_epoch == fresh.best_epoch
    a = load_file(tmp_path / "resumed" / "fusion_head.safetensors")
    b = load_file(tmp_path / "fresh" / "fusion_head.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_extraction_killed_mid_shard_reencodes_only_the_unfinished_part(
        sample_dataset, make_config, tmp_path):
    cfg = make_config(sample_dataset, "extract.batch_size=4", "extract.shard_size=8")
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    config_file = tmp_path / "cfg.json"
    config_file.write_text(cfg.to_json())
    from crossfuse.encoders import build_encoder

    image_encoder = build_encoder(cfg.extract.encoders["image"], "image")

    def cached_images() -> int:
        return len(FeatureCache(Path(cfg.extract.cache_dir), image_encoder.cache_key)._where)

    child = run_child("extract", config_file, tmp_path / "pre", tmp_path / "killed")
    kill_when(child, lambda: cached_images() >= 16)  # two shards of 8 done, the third under way
    done = cached_images()
    assert done % 8 == 0 and 16 <= done < 60       # only whole shards survive
    assert not (tmp_path / "killed" / "index.parquet").exists()

    result = extract(cfg, tmp_path / "pre", tmp_path / "features")
    assert result.cache_hits["image"] == done
    assert result.encoded["image"] == 60 - done

    clean = cfg.model_copy(deep=True)
    clean.extract.cache_dir = str(tmp_path / "clean-cache")
    extract(clean, tmp_path / "pre", tmp_path / "clean")
    resumed, fresh = read_feature_set(tmp_path / "features"), read_feature_set(tmp_path / "clean")
    for m in ("image", "text"):
        torch.testing.assert_close(resumed.vectors[m], fresh.vectors[m])
