"""The batch DAG: validate -> preprocess -> extract (fanned out) -> score, with a registered model.

The one parameter ``config_json`` is a serialised :class:`crossfuse.config.RunConfig` naming
the data (``data.path``) and the model (``predict.model``: ``NAME@ALIAS`` or ``NAME/VERSION``).
The first step pins the alias to a version, fetches that version's folder and derives the
scoring config from it (the model's modalities, encoders and transforms with this run's data
and settings), which the later steps use. One pipeline run is one MLflow run in the
experiment ``<model>-predictions``. Steps get the resources of the training steps they
mirror (``pipeline.resources``: validate, preprocess, extract, and evaluate for the score step).
"""

from typing import NamedTuple

from kfp import dsl

from components import batch_preprocess, batch_score, batch_validate
from crossfuse.config import RunConfig
from pipelines.multimodal_fusion import apply_resources, fan_out_extract

PIPELINE_NAME = "crossfuse-batch-predict"


def build_batch_pipeline(cfg: RunConfig | None = None):
    """The batch DAG with ``cfg.pipeline``'s resources; ``config_json`` defaults to ``cfg``."""
    cfg = cfg or RunConfig()
    outputs = NamedTuple("Outputs", [("result", str), ("drift", bool)])  # noqa: UP014

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Score a folder of data with a registered crossfuse model and "
                              "check it for drift against the model's training data.")
    def batch_predict(config_json: str = cfg.to_json()) -> outputs:
        validated = batch_validate(config_json=config_json).set_display_name("validate")
        run_id, scoring = validated.outputs["run_id"], validated.outputs["scoring_config"]
        prepared = batch_preprocess(scoring_config=scoring, run_id=run_id,
                                    validation=validated.outputs["validation"],
                                    model=validated.outputs["model"]).set_display_name("preprocess")
        parts = fan_out_extract(cfg, config_json, prepared.outputs["dataset"])
        scored = batch_score(scoring_config=scoring, run_id=run_id,
                             model=validated.outputs["model"],
                             validation=validated.outputs["validation"],
                             parts=parts).set_display_name("score")
        for name, task in (("validate", validated), ("preprocess", prepared),
                           ("evaluate", scored)):
            apply_resources(task, cfg.pipeline.resources.get(name), cfg.pipeline)
        return outputs(scored.outputs["result"], scored.outputs["drift"])

    return batch_predict



def __getattr__(name: str):
    """``batch_predict``, the DAG with the default config, built when first asked for (building
    takes seconds that a process which only runs or compiles another DAG need not pay)."""
    if name == "batch_predict":
        return build_batch_pipeline()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
