"""The crossfuse DAG: validate -> preprocess -> extract -> train -> evaluate -> register.

The single parameter ``config_json`` is a serialised :class:`crossfuse.config.RunConfig`;
every stage reads the same one. The first stage creates the MLflow run and the
others write into it, so one pipeline run is one MLflow run.
"""

from typing import NamedTuple

from kfp import dsl

from components import evaluate, extract, preprocess, register, train, validate
from crossfuse.config import RunConfig

PIPELINE_NAME = "crossfuse-multimodal-fusion"


@dsl.pipeline(name=PIPELINE_NAME,
              description="Validate, preprocess, encode, fuse, evaluate and register a "
                          "multimodal classifier.")
def multimodal_fusion(config_json: str = RunConfig().to_json()
                      ) -> NamedTuple("Outputs", [("version", str), ("champion_version", str),
                                                  ("promoted", bool)]):
    validated = validate(config_json=config_json).set_display_name("validate")
    run_id = validated.outputs["Output"]
    prepared = preprocess(config_json=config_json, run_id=run_id,
                          validation=validated.outputs["validation"])
    encoded = extract(config_json=config_json, run_id=run_id,
                      dataset=prepared.outputs["dataset"])
    trained = train(config_json=config_json, run_id=run_id, features=encoded.outputs["features"])
    evaluated = evaluate(config_json=config_json, run_id=run_id, dataset=prepared.outputs["dataset"],
                         features=encoded.outputs["features"], model=trained.outputs["model"])
    registered = register(config_json=config_json, run_id=run_id, model=trained.outputs["model"],
                          evaluation=evaluated.outputs["evaluation"])
    outputs = NamedTuple("Outputs", [("version", str), ("champion_version", str),  # noqa: UP014
                                     ("promoted", bool)])
    return outputs(registered.outputs["version"], registered.outputs["champion_version"],
                   registered.outputs["promoted"])
