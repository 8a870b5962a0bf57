"""KFP component: encode the preprocessed samples with the frozen encoders (cache first)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def extract(config_json: str, run_id: str, dataset: Input[Dataset], features: Output[Dataset]):
    """Write the feature set folder (index.parquet, safetensors shards per modality)."""
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_extract

    result = run_extract(RunConfig.from_json(config_json), run_id, Path(dataset.path),
                         Path(features.path))
    features.metadata.update({"samples": result.n_samples, "dims": result.dims,
                              "cache_hits": result.cache_hits, "encoded": result.encoded})
