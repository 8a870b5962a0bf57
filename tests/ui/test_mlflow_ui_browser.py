"""What a reviewer sees in the MLflow UI, checked in a real browser (Chromium via Playwright).

One pipeline run (tiny encoders, the real stages) is logged to a SQLite store; ``mlflow ui``
serves it on loopback; headless Chromium opens the pages the run summary links to.
Skipped, with the reason, where Playwright or a Chromium binary is not installed
(``make browser`` installs Debian's chromium where apt can).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import build_config, free_port, http_server, run_stages

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("CROSSFUSE_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
# No background networking: this machine's closed network refuses it, many times a start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (it is a dev dependency: make install)"
    if CHROMIUM is None:
        return ("no Chromium binary (apt-get install chromium, or `make browser`; or set "
                "CROSSFUSE_CHROMIUM to a Chromium/Chrome executable)")
    return None


@pytest.fixture(scope="module")
def ui(tmp_path_factory, sample_dataset, tiny_text_model, tiny_image_model):
    problem = _browser_problem()
    if problem:
        pytest.skip(f"browser test skipped: {problem}")
    root = tmp_path_factory.mktemp("ui")
    cfg = build_config(root, sample_dataset, tiny_text_model, tiny_image_model,
                       "fusion.method=concat", "evaluate.efficiency=false",
                       "evaluate.robustness.raw=false")
    run_id, result = run_stages(cfg, root)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    with http_server([mlflow_cli, "ui", "--backend-store-uri", cfg.mlflow.tracking_uri,
                      "--host", "127.0.0.1", "--port", str(port)], f"{base}/health",
                     root / "ui.log"):
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield {"page": page, "base": base, "run_id": run_id, "cfg": cfg, "result": result}
            browser.close()


def open_page(ui, url: str, wait_for: str):
    page = ui["page"]
    page.goto(url)
    page.get_by_text(wait_for, exact=False).first.wait_for(timeout=60_000)
    return page


def experiment_url(ui) -> str:
    from mlflow.tracking import MlflowClient

    from pipelines.cli import ui_url

    run = MlflowClient(ui["cfg"].mlflow.tracking_uri).get_run(ui["run_id"])
    link = ui_url(ui["cfg"].mlflow.tracking_uri, run.info.experiment_id, ui["run_id"])
    return ui["base"] + "/" + link.split("http://127.0.0.1:5000/", 1)[1]


def test_the_run_link_opens_a_training_run_with_its_dataset_source_and_description(ui):
    page = open_page(ui, experiment_url(ui), "About this run")
    body = page.inner_text("body")
    # Training runs, not the GenAI traces overview.
    assert "Detect Issues" not in body and "Token Usage" not in body
    cfg = ui["cfg"]
    # The description opens on the answer: the decision, then the headline with its interval.
    name = cfg.model_name()
    assert f"{name} v{ui['result'].version} was promoted to champion" in body
    assert "(95% CI " in body
    assert body.index("was promoted to champion") < body.index(
        f"crossfuse pipeline on {cfg.data.dataset_name()}")  # then what ran
    assert "multimodal_fusion" in body  # the source: the pipeline, not executor_main.py
    datasets = page.get_by_text("Datasets", exact=True).first
    assert datasets.is_visible()
    # The dataset's digest is the DVC md5 (else the manifest's sha256), as logged.
    from mlflow.tracking import MlflowClient

    run = MlflowClient(cfg.mlflow.tracking_uri).get_run(ui["run_id"])
    digest = run.inputs.dataset_inputs[0].dataset.digest
    assert f"{cfg.data.dataset_name()} ({digest})" in body


def test_the_metrics_tab_shows_one_section_per_metric_family(ui):
    url = experiment_url(ui).replace(f"/runs/{ui['run_id']}", f"/runs/{ui['run_id']}/model-metrics")
    page = open_page(ui, url, "Add chart")
    body = page.inner_text("body")
    for section in ("test", "baseline", "calibration", "validation", "train", "missing_modality",
                    "importance", "robustness"):
        assert f"\n{section}\n" in body, f"no {section!r} section on the metrics tab"


def test_the_model_version_page_shows_the_aliases_and_the_decision(ui):
    name, version = ui["cfg"].model_name(), ui["result"].version
    page = open_page(ui, f"{ui['base']}/#/models/{name}/versions/{version}", "Aliases")
    body = page.inner_text("body")
    assert "champion" in body and "challenger" in body
    assert "crossfuse.decision" in body and "promoted" in body
    assert "crossfuse.reason" in body
    assert f"{name} v{version} was promoted to champion" in body  # the version's description
