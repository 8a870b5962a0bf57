"""KFP exit handler: end the pipeline's MLflow run FAILED when the KFP run did not succeed."""

from kfp import dsl

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def close_run(config_json: str, kfp_run: str, status: dsl.PipelineTaskFinalStatus):
    """Runs after every other task, whatever happened to them: a stage killed by the kernel
    (out of memory) or an evicted pod cannot mark its own run, so this task does."""
    from crossfuse.config import RunConfig
    from crossfuse.tracking import close_pipeline_run

    ended = close_pipeline_run(RunConfig.from_json(config_json), kfp_run, status.state,
                               status.error_message)
    print(f"pipeline {status.state}; MLflow runs ended FAILED: {ended or 'none'}")
