"""KFP component: test metrics, confusion matrix and unimodal baselines."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(config_json: str, run_id: str, features: Input[Dataset], model: Input[Model],
             evaluation: Output[Artifact], metrics: Output[Metrics],
             classification: Output[ClassificationMetrics]):
    """Write the evaluation folder (metrics.json, confusion_matrix.png, predictions)."""
    import json
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_evaluate

    result = run_evaluate(RunConfig.from_json(config_json), run_id, Path(features.path),
                          Path(model.path), Path(evaluation.path))
    for name, value in sorted(result.metrics.items()):
        metrics.log_metric(name, value)
    labels = json.loads((Path(features.path) / "labels.json").read_text())
    classification.log_confusion_matrix(labels, result.confusion)
