"""KFP components of the batch pipeline: validate against a registered model, preprocess with
its transforms, score. Extraction is the training pipeline's ``extract`` component."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def batch_validate(config_json: str, validation: Output[Artifact], model: Output[Model],
                   data_docs: Output[HTML], metrics: Output[Metrics]
                   ) -> NamedTuple("Outputs", [("run_id", str), ("scoring_config", str)]):  # noqa: UP014
    """Resolve ``predict.model`` to one version, fetch its folder (``model``), create the batch's
    MLflow run and validate the data against the model; fails (and stops the pipeline) on bad
    data. Returns the run id and the scoring config (the model's, with this run's data)."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from crossfuse.batch.stages import run_batch_validate
    from crossfuse.config import RunConfig

    run_id, scoring, report = run_batch_validate(RunConfig.from_json(config_json),
                                                 Path(validation.path), Path(model.path))
    shutil.copyfile(Path(validation.path) / "data_docs" / "index.html", data_docs.path)
    for name, value in (("rows", report.n_rows), ("valid", report.n_valid),
                        ("rejected", report.n_rejected)):
        metrics.log_metric(name, value)
    return namedtuple("Outputs", ["run_id", "scoring_config"])(run_id, scoring.to_json())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def batch_preprocess(scoring_config: str, run_id: str, validation: Input[Artifact],
                     model: Input[Model], dataset: Output[Dataset]):
    """Prepare the valid rows with the model's transforms (samples.parquet, images/)."""
    from pathlib import Path

    from crossfuse.batch.stages import run_batch_preprocess
    from crossfuse.config import RunConfig

    n = run_batch_preprocess(RunConfig.from_json(scoring_config), run_id, Path(validation.path),
                             Path(model.path), Path(dataset.path))
    # The extract steps inside dsl.ParallelFor read the run id and the scoring config from the
    # dataset (kfp 2.17's local runner hands loop items to outer string parameters).
    dataset.metadata.update({"samples": n, "mlflow_run_id": run_id,
                             "config_json": scoring_config})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def batch_score(scoring_config: str, run_id: str, model: Input[Model],
                validation: Input[Artifact], parts: Input[list[Dataset]],
                predictions: Output[Dataset], report: Output[HTML], metrics: Output[Metrics]
                ) -> NamedTuple("Outputs", [("result", str), ("drift", bool)]):  # noqa: UP014
    """Score every part in shards, check drift, write predictions.parquet and the report; ends
    the MLflow run. Returns the result (JSON) and whether any drift figure crossed its threshold."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from crossfuse.batch.stages import batch_result_json, run_batch_score
    from crossfuse.config import RunConfig

    result = run_batch_score(RunConfig.from_json(scoring_config), run_id, Path(model.path),
                             Path(validation.path), [Path(p.path) for p in parts],
                             Path(predictions.path))
    shutil.copyfile(result.report, report.path)
    predictions.metadata.update({"rows": result.rows_scored, "model_version": result.version})
    for name, value in (("rows_scored", result.rows_scored),
                        ("rows_rejected", result.rows_rejected)):
        metrics.log_metric(name, value)
    return namedtuple("Outputs", ["result", "drift"])(batch_result_json(result),
                                                       bool(result.flagged))
