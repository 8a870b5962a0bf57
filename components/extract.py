"""KFP components: encode one share of the samples (cache first), and merge the shares."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def extract(config_json: str, part: int, parts: int, dataset: Input[Dataset],
            features: Output[Dataset]):
    """Encode rows ``part, part + parts, ...`` into a partial feature set.

    The MLflow run id comes with the dataset (``mlflow_run_id`` metadata), not as a
    parameter: kfp 2.17's local runner overwrote string parameters inside ParallelFor. So
    does a batch's scoring config (``config_json`` metadata), which replaces ``config_json``.
    """
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_extract

    # A batch's config is made from its model at run time and comes with the dataset.
    config_json = dataset.metadata.get("config_json", config_json)
    # The local runner hands loop items over as floats: cast.
    result = run_extract(RunConfig.from_json(config_json), dataset.metadata["mlflow_run_id"],
                         Path(dataset.path), Path(features.path), part=(int(part), int(parts)))
    features.metadata.update({"samples": result.n_samples, "encoded": result.encoded})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_features(config_json: str, run_id: str, parts: Input[list[Dataset]],
                   features: Output[Dataset]):
    """Join the partial feature sets into the run's feature set (index.parquet, shards)."""
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_merge_features

    result = run_merge_features(RunConfig.from_json(config_json), run_id,
                                [Path(p.path) for p in parts], Path(features.path))
    features.metadata.update({"samples": result.n_samples, "dims": result.dims,
                              "cache_hits": result.cache_hits, "encoded": result.encoded})
