"""The served model over HTTP: MLflow's scoring server (what ``mlflow models serve`` runs),
in a thread on 127.0.0.1, with the pyfunc the register stage logs.

A user relies on the server to refuse what it should, with a 400 that says which row,
which column and why, and no stack trace: unknown columns, a row with no modality, a
value of the wrong type, bytes that are not an image, and any path on the server (which
must not even reveal whether the file exists).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from crossfuse.config import load_config
from crossfuse.data.preprocess import preprocess
from crossfuse.data.sample import generate_sample_dataset
from crossfuse.features.extract import extract
from crossfuse.registry.register import MODEL_CODE, _pip_requirements, model_signature
from crossfuse.training.train import train

pytestmark = pytest.mark.slow


def train_model(root: Path, data: Path, *overrides: str) -> Path:
    """Preprocess, extract and train a small model on ``data``; its folder."""
    cfg = load_config(None, [f"data.path={data}", "data.name=http", "fusion.method=concat",
                             "train.epochs=3", f"extract.cache_dir={root / 'cache'}",
                             f"train.checkpoint_dir={root / 'checkpoints'}", *overrides],
                      env={}).resolved(root)
    preprocess(cfg, data, root / "pre")
    extract(cfg, root / "pre", root / "features")
    train(cfg, root / "features", root / "model")
    return root / "model"


def serve(model_dir: Path, root: Path):
    """Yield the base URL of MLflow's scoring server over the pyfunc of ``model_dir``,
    logged the way the register stage logs it (models-from-code)."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    mlflow.pyfunc.save_model(root / "pyfunc", python_model=str(MODEL_CODE),
                             artifacts={"model": str(model_dir)},
                             signature=model_signature(model_dir),
                             pip_requirements=_pip_requirements())
    app = scoring_server.init(mlflow.pyfunc.load_model(str(root / "pyfunc")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, the dataset folder) of a scoring server over a freshly trained model."""
    root = tmp_path_factory.mktemp("http")
    data = root / "data"
    generate_sample_dataset(data, per_class=6, seed=2)
    model = train_model(root, data, "train.modality_dropout={image: 0.3, text: 0.3}")
    for url in serve(model, root):
        yield url, data


@pytest.fixture(scope="module")
def audio_server(tmp_path_factory):
    """The same for a model of image, text and audio."""
    root = tmp_path_factory.mktemp("http-audio")
    data = root / "data"
    generate_sample_dataset(data, per_class=6, seed=2, audio=True)
    model = train_model(root, data, "train.modality_dropout={image: 0.3, text: 0.3, audio: 0.3}",
                        "extract.encoders={image: efficientnet-lite0, text: minilm, "
                        "audio: logmel}")
    for url in serve(model, root):
        yield url, data


def post(url: str, records: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def refused(answer: tuple[int, dict], *words: str) -> str:
    status, body = answer
    assert status == 400, body
    message = body["message"]
    assert "Traceback" not in message and "stack_trace" not in body
    for word in words:
        assert word in message, message
    return message


def test_base64_images_and_missing_modalities_are_served(server):
    url, data = server
    image = b64(data / "images" / "s00000.png")
    status, body = post(url, [{"text": "A fox rested at noon.", "image": image},
                              {"text": "A fox rested at noon.", "image": None},
                              {"image": image, "text": ""}])
    assert status == 200, body
    assert len(body["predictions"]) == 3
    assert all(p["label"] for p in body["predictions"])


def test_misspelt_columns_are_refused(server):
    # MLflow drops columns its signature does not name before the model sees them; the
    # model then finds its own columns absent and names them.
    url, data = server
    refused(post(url, [{"txt": "A fox rested at noon.", "img": "x"}]),
            "the request has no column(s) ['image', 'text']", "this model reads ['image', 'text']")
    refused(post(url, [{"text": "A fox rested at noon.",
                        "img": b64(data / "images" / "s00000.png")}]),
            "the request has no column(s) ['image']")


def test_unknown_columns_are_named_by_the_model(server):
    from crossfuse.registry.serving import InvalidInput

    model = mlflow.pyfunc.load_model(str(Path(server[1]).parent / "pyfunc"))
    predictor = model.unwrap_python_model().predictor
    with pytest.raises(InvalidInput, match=r"unknown column\(s\) \['txt'\]"):
        predictor.predict(pd.DataFrame({"text": ["x"], "image": [None], "txt": ["y"]}))


def test_a_row_with_no_modality_is_refused(server):
    url, data = server
    refused(post(url, [{"text": "A fox.", "image": b64(data / "images" / "s00000.png")},
                       {"text": None, "image": None}]),
            "row 1: every modality is missing")


def test_the_served_model_refuses_the_texts_training_refuses(server):
    url, data = server
    image = b64(data / "images" / "s00000.png")
    refused(post(url, [{"text": "A fox.", "image": image}, {"text": "   ", "image": image}]),
            "row 1, column 'text': text is only whitespace")  # validation's own words
    refused(post(url, [{"text": "word " * 1000, "image": image}]),
            "row 0, column 'text': text length outside [validation.min_text_chars, "
            "max_text_chars]: 5,000 characters")


def test_images_arrive_as_data_uris_or_url_safe_base64_too(server):
    url, data = server
    raw = (data / "images" / "s00000.png").read_bytes()
    plain = post(url, [{"text": "A fox.", "image": base64.b64encode(raw).decode()}])
    for image in (f"data:image/png;base64,{base64.b64encode(raw).decode()}",
                  base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert post(url, [{"text": "A fox.", "image": image}]) == plain


def test_request_mistakes_are_named_and_a_huge_value_is_not_echoed(server):
    from crossfuse.registry.serving import InvalidInput

    url, data = server
    # A JSON body sent as CSV: MLflow reads the JSON text as column names.
    body = json.dumps({"dataframe_records": [{"text": "A fox.", "image": None}]}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body,
                                     headers={"Content-Type": "text/csv"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=120)
    answer = json.loads(err.value.read())["message"]
    assert "a JSON body sent as text/csv arrives like this too" in answer
    # 5 MB that is neither base64 nor a file: the reason, and a short excerpt at most.
    message = refused(post(url, [{"text": "A fox.", "image": "%" * 5_000_000}]), "row 0")
    assert len(message) < 2_000
    # Rows without column names (MLflow's "inputs" form) are explained too.
    body = json.dumps({"inputs": [["A fox.", None]]}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=120)
    assert "the unnamed columns of an 'inputs' array" in json.loads(err.value.read())["message"]
    model = mlflow.pyfunc.load_model(str(Path(data).parent / "pyfunc"))
    predictor = model.unwrap_python_model().predictor
    twice = pd.DataFrame([["A fox.", "A cat."]], columns=["text", "text"])
    with pytest.raises(InvalidInput, match=r"column\(s\) \['text'\] appear more than once"):
        predictor.predict(twice)


def test_a_number_for_text_is_a_wrong_type(server):
    url, _ = server
    refused(post(url, [{"text": 12345, "image": None}]), "row 0, column 'text'", "expected a string")


def test_bytes_that_are_not_an_image(server):
    url, _ = server
    refused(post(url, [{"text": "x", "image": base64.b64encode(b"hello, not a png").decode()}]),
            "row 0, column 'image'", "not an image")
    refused(post(url, [{"text": "x", "image": "%%% not base64 %%%"}]),
            "row 0, column 'image'", "base64")


def test_server_paths_are_refused_without_revealing_whether_they_exist(server):
    url, data = server
    existing = refused(post(url, [{"text": "x", "image": "/etc/passwd"}]), "row 0, column 'image'")
    missing = refused(post(url, [{"text": "x", "image": "/etc/no-such-file-here"}]),
                      "row 0, column 'image'")
    inside = refused(post(url, [{"text": "x", "image": str(data / "images" / "s00001.png")}]),
                     "paths are refused unless the server sets serving.media_root")
    def ours(message: str) -> str:  # MLflow prefixes the request; the reason is ours
        return message.split("\nError: ", 1)[1]
    assert ours(existing) == ours(missing) == ours(inside)


def test_audio_arrives_as_base64_wav_or_flac_and_may_be_the_only_modality(audio_server):
    url, data = audio_server
    wav = b64(data / "audio" / "s00001.wav")
    flac = io.BytesIO()
    sf.write(flac, *sf.read(data / "audio" / "s00002.wav"), format="FLAC")
    rows = [{"image": b64(data / "images" / "s00001.png"), "text": "A fox at noon.", "audio": wav},
            {"image": None, "text": None, "audio": base64.b64encode(flac.getvalue()).decode()},
            {"image": None, "text": "A fox at noon.", "audio": None}]
    status, body = post(url, rows)
    assert status == 200, body
    assert len(body["predictions"]) == 3 and all(p["label"] for p in body["predictions"])


def test_bytes_that_are_not_usable_audio_are_refused_with_the_reason(audio_server):
    url, data = audio_server
    silent = io.BytesIO()
    sf.write(silent, np.zeros(8000), 8000, format="WAV")
    refused(post(url, [{"image": None, "text": "x",
                        "audio": base64.b64encode(b"RIFF, but not a wave").decode()}]),
            "row 0, column 'audio'", "not audio")
    refused(post(url, [{"image": None, "text": "x",
                        "audio": base64.b64encode(silent.getvalue()).decode()}]),
            "row 0, column 'audio'", "silent")
    refused(post(url, [{"image": None, "text": "x", "audio": str(data / "audio" / "s00001.wav")}]),
            "row 0, column 'audio'", "paths are refused")
