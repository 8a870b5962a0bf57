"""Stage 6, register: log the pyfunc, register a version, move the aliases.

Every new version gets the alias ``challenger``. ``champion`` moves to it only
when its score on ``registry.metric`` beats the current champion's (or there is
no champion). The decision and the numbers behind it are tags on the version:
``crossfuse.decision`` (``promoted`` / ``not promoted``), ``crossfuse.reason``,
``crossfuse.metric.<name>``, ``crossfuse.run_id``.

Example
-------
>>> decide_promotion("test_macro_f1", 0.91, champion=(0.88, "3")).promote
True
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from crossfuse.fusion.model import SPEC_FILE
from crossfuse.serving import CrossfusePyfunc

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
METRIC_TAG = "crossfuse.metric."


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class RegisterResult:
    model_name: str
    version: str
    promoted: bool
    reason: str
    champion_version: str


def decide_promotion(metric: str, score: float, champion: tuple[float, str] | None) -> Decision:
    """Champion/challenger: promote when there is no champion or ``score`` beats its score.

    Parameters
    ----------
    metric: metric name, for the reason text.
    score: the challenger's value (higher is better).
    champion: ``(score, version)`` of the current champion, or None.
    """
    if champion is None:
        return Decision(True, f"no champion yet; {metric}={score:.4f}")
    best, version = champion
    if score > best:
        return Decision(True, f"{metric} {score:.4f} beats champion v{version}'s {best:.4f}")
    return Decision(False, f"{metric} {score:.4f} does not beat champion v{version}'s {best:.4f}")


def current_champion(client: MlflowClient, name: str, metric: str) -> tuple[float, str] | None:
    """``(score, version)`` of the version aliased ``champion``, or None."""
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    tag = mv.tags.get(METRIC_TAG + metric)
    if tag is None:
        value = client.get_run(mv.run_id).data.metrics.get(metric) if mv.run_id else None
        if value is None:
            return None
        return float(value), mv.version
    return float(tag), mv.version


def _pip_requirements() -> list[str]:
    try:
        return [r for r in (requires("crossfuse") or []) if "extra ==" not in r]
    except PackageNotFoundError:
        return []


def model_signature(model_dir: Path) -> ModelSignature:
    """Inputs: one optional string column per modality; outputs: ``label`` and ``p_<class>``."""
    meta = json.loads((Path(model_dir) / SPEC_FILE).read_text())
    inputs = Schema([ColSpec("string", m, required=False) for m in meta["dims"]])
    outputs = Schema([ColSpec("string", "label")]
                     + [ColSpec("double", f"p_{name}") for name in meta["labels"]]
                     + [ColSpec("string", t) for t in meta.get("targets", {})])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pyfunc(model_dir: Path):
    """Log the model folder as an MLflow pyfunc named ``model`` in the active run."""
    return mlflow.pyfunc.log_model(name="model", python_model=CrossfusePyfunc(),
                                   artifacts={"model": str(model_dir)},
                                   signature=model_signature(model_dir),
                                   pip_requirements=_pip_requirements())


def register(model_name: str, model_dir: Path, metric: str, score: float,
             run_id: str) -> RegisterResult:
    """Log and register ``model_dir`` as a new version of ``model_name`` (inside the active run)."""
    client = MlflowClient()
    info = log_pyfunc(Path(model_dir))
    mv = mlflow.register_model(info.model_uri, model_name)
    champion = current_champion(client, model_name, metric)
    decision = decide_promotion(metric, score, champion)
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, mv.version)
    tags = {"crossfuse.decision": "promoted" if decision.promote else "not promoted",
            "crossfuse.reason": decision.reason, METRIC_TAG + metric: repr(float(score)),
            "crossfuse.run_id": run_id}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, mv.version, key, value)
    champion_version = mv.version if decision.promote else champion[1]
    log.info("registered %s v%s: %s", model_name, mv.version, decision.reason)
    return RegisterResult(model_name=model_name, version=str(mv.version),
                          promoted=decision.promote, reason=decision.reason,
                          champion_version=str(champion_version))
