"""KFP component: normalise, resize and split the validated dataset."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def preprocess(config_json: str, run_id: str, validation: Input[Artifact],
               dataset: Output[Dataset]):
    """Write the preprocessed dataset folder (samples.parquet, labels.json, images/)."""
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_preprocess

    result = run_preprocess(RunConfig.from_json(config_json), run_id, Path(validation.path),
                            Path(dataset.path))
    # run_id travels with the dataset too: steps inside dsl.ParallelFor read it from here
    # (kfp 2.17's local runner hands loop items to outer string parameters).
    dataset.metadata.update({"samples": result.n_samples, **result.split_counts,
                             "mlflow_run_id": run_id})
