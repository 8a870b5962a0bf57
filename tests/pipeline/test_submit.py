"""`crossfuse submit`: kfp's own client against a local HTTP server that records the requests.

Nothing of ours is mocked: the request bodies are what kfp sends a real KFP API, and
they are checked against the kfp-server-api models and against our compiled pipeline.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kfp_server_api.models import V2beta1Run

from crossfuse.config import RunConfig, load_config
from crossfuse.errors import UserError
from pipelines.cli import main
from pipelines.submit import submit


class Recorder(BaseHTTPRequestHandler):
    """Answers like the KFP v2beta1 API for experiments and runs, and keeps every request."""

    requests: list = []
    final_state = "SUCCEEDED"

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/runs/"):
            self._reply({"run_id": self.path.rsplit("/", 1)[-1], "state": self.final_state})
        else:
            self._reply({"experiments": []} if "/experiments" in self.path else {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        else:
            self._reply({**body, "run_id": "run-1", "state": "PENDING"})

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_api():
    Recorder.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.requests
    server.shutdown()


REMOTE = "s3://team-bucket/crossfuse"
TEAM = ["--set", "mlflow.tracking_uri=http://mlflow.team:5000", "--set", f"data.remote={REMOTE}"]


def config(*overrides):
    return load_config("configs/default.yaml", ["mlflow.tracking_uri=http://mlflow.team:5000",
                                                f"data.remote={REMOTE}",
                                                "pipeline.resources.train.accelerator_type="
                                                "nvidia.com/gpu", *overrides], env={})


def test_submit_sends_the_run_the_kfp_api_expects(kfp_api):
    host, requests = kfp_api
    cfg = config()
    result = submit(cfg, host, experiment="team-exp")
    assert result == {"run_id": "run-1", "url": f"{host}/#/runs/details/run-1"}
    posts = {path.split("?")[0]: body for method, path, body in requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "team-exp"
    body = posts["/apis/v2beta1/runs"]
    run = V2beta1Run(**body)  # the server's own model accepts it
    assert run.experiment_id == "exp-1"
    sent = RunConfig.from_json(run.runtime_config["parameters"]["config_json"])
    # the data version travels pinned: the pods pull data.dvc's md5 from the remote
    pinned = yaml.safe_load(Path("data.dvc").read_text())["outs"][0]
    assert sent.data.pinned == pinned and sent.data.remote == REMOTE
    assert run.display_name == f"sample-auto-data-{pinned['md5'][:8]}"
    assert sent.model_dump(exclude={"data"}) == cfg.model_dump(exclude={"data"})
    spec = run.pipeline_spec
    assert spec["pipelineInfo"]["name"] == "crossfuse-multimodal-fusion"
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    ir = yaml.safe_load(yaml.safe_dump(spec))
    assert ir["root"]["dag"]["tasks"].keys() == {"close-run", "exit-handler-1"}
    assert ir["components"]["comp-exit-handler-1"]["dag"]["tasks"].keys() == {
        "validate", "preprocess", "extract", "train", "evaluate", "register"}


def test_submit_batch_sends_the_batch_pipeline_with_its_model(kfp_api, capsys):
    host, requests = kfp_api
    assert main(["submit", "--host", host, "--batch", "--model", "crossfuse-sample/3", *TEAM]) == 0
    posts = {path.split("?")[0]: body for method, path, body in requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "crossfuse-sample-predictions"
    run = V2beta1Run(**posts["/apis/v2beta1/runs"])
    assert run.pipeline_spec["pipelineInfo"]["name"] == "crossfuse-batch-predict"
    assert run.display_name.endswith("-predict")
    sent = RunConfig.from_json(run.runtime_config["parameters"]["config_json"])
    assert sent.predict.model == "crossfuse-sample/3" and sent.data.remote == REMOTE


def test_a_local_tracking_store_is_refused(kfp_api):
    host, requests = kfp_api
    with pytest.raises(UserError, match="needs a tracking server its pods reach"):
        submit(load_config("configs/default.yaml", env={}), host)
    assert requests == []  # refused before anything was sent


def test_a_run_without_a_dvc_remote_is_refused(kfp_api):
    host, requests = kfp_api
    with pytest.raises(UserError, match="data.remote is not set"):
        submit(config("data.remote=null"), host)
    assert requests == []


def test_submit_command(kfp_api, capsys):
    host, requests = kfp_api
    assert main(["submit", "--host", host, *TEAM]) == 0
    assert f"submitted run run-1: {host}/#/runs/details/run-1" in capsys.readouterr().out
    assert any(path.startswith("/apis/v2beta1/runs") for _, path, _ in requests)


@pytest.mark.parametrize("state, code", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_submit_waits_and_fails_when_the_run_fails(state, code, kfp_api, capsys):
    host, requests = kfp_api
    Recorder.final_state = state
    try:
        assert main(["submit", "--host", host, "--wait", "60", *TEAM]) == code
    finally:
        Recorder.final_state = "SUCCEEDED"
    assert f"run run-1 ended: {state}" in capsys.readouterr().out
    assert ("GET", "/apis/v2beta1/runs/run-1", None) in requests
