"""KFP component: test metrics, calibration, robustness, importance, efficiency, HTML report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(config_json: str, run_id: str, dataset: Input[Dataset], features: Input[Dataset],
             model: Input[Model], evaluation: Output[Artifact], report: Output[HTML],
             metrics: Output[Metrics], classification: Output[ClassificationMetrics]):
    """Write the evaluation folder; the report as HTML, the headline metrics and confusion matrix."""
    import json
    import shutil
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.evaluation.report import REPORT_FILE, is_headline
    from crossfuse.stages import run_evaluate

    out = Path(evaluation.path)
    result = run_evaluate(RunConfig.from_json(config_json), run_id, Path(features.path),
                          Path(model.path), out, preprocessed=Path(dataset.path))
    shutil.copyfile(out / REPORT_FILE, report.path)
    for name, value in sorted(result.metrics.items()):
        if is_headline(name):
            metrics.log_metric(name, value)
    labels = json.loads((Path(features.path) / "labels.json").read_text())
    classification.log_confusion_matrix(labels, result.confusion)
