"""KFP component: train the fusion head on the features."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(config_json: str, run_id: str, features: Input[Dataset], model: Output[Model],
          metrics: Output[Metrics], dataset: Input[Dataset] = None):
    """Write the model folder (fusion head weights, spec, run config).

    ``dataset`` (the preprocessed items) is wired only when ``fusion.finetune`` adapts the
    encoders, which read the items themselves.
    """
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_train

    cfg = RunConfig.from_json(config_json)
    result = run_train(cfg, run_id, Path(features.path), Path(model.path),
                       preprocessed=Path(dataset.path) if dataset is not None else None)
    model.metadata.update({"method": result.method, "best_epoch": result.best_epoch})
    metrics.log_metric("best_val_macro_f1", result.best_val_macro_f1)
    metrics.log_metric("best_epoch", result.best_epoch)
