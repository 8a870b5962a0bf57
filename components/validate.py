"""KFP component: validate the dataset; creates the pipeline's MLflow run and returns its id."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(config_json: str, validation: Output[Artifact], data_docs: Output[HTML],
             metrics: Output[Metrics], kfp_run: str = "", run_token: str = "") -> str:
    """Run the GX suite and media checks; fails (and stops the pipeline) on bad data.

    Outputs: ``validation`` (folder: report.json, rejects.csv, data_docs/), ``data_docs``
    (the GX Data Docs index page), ``metrics`` (row counts). Returns the MLflow run id, tagged
    with ``kfp_run`` (the KFP run's id) so the exit handler can find it, and ``run_token`` (the
    caller's own name for this run) so the caller can.
    """
    import shutil
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_validate

    cfg = RunConfig.from_json(config_json)
    run_id, report = run_validate(cfg, None, Path(validation.path), kfp_run=kfp_run,
                                  run_token=run_token)
    shutil.copyfile(Path(validation.path) / "data_docs" / "index.html", data_docs.path)
    metrics.log_metric("rows", report.n_rows)
    metrics.log_metric("valid", report.n_valid)
    metrics.log_metric("rejected", report.n_rejected)
    return run_id
