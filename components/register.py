"""KFP component: register the model in MLflow and apply the champion/challenger rule."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(config_json: str, run_id: str, model: Input[Model], evaluation: Input[Artifact]
             ) -> NamedTuple("Registration", [("version", str), ("champion_version", str),
                                              ("promoted", bool), ("reason", str)]):
    """Log the pyfunc, register a version, move ``challenger`` (and maybe ``champion``)."""
    from collections import namedtuple
    from pathlib import Path

    from crossfuse.config import RunConfig
    from crossfuse.stages import run_register

    r = run_register(RunConfig.from_json(config_json), run_id, Path(model.path),
                     Path(evaluation.path))
    out = namedtuple("Registration", ["version", "champion_version", "promoted", "reason"])
    return out(r.version, r.champion_version, r.promoted, r.reason)
