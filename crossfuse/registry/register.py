"""Stage 6, register: log the pyfunc, register a version, move the aliases; promote by hand.

Every new version gets the alias ``challenger``. ``champion`` moves to it only when
the gate (:mod:`crossfuse.registry.promotion`) says so: the primary metric beats the
champion's by the margin, and no guardrail (calibrated ECE, any single-modality-missing
score) is worse by more than its limit. The decision is written as tags on the
version and on the run:

- ``crossfuse.decision`` — ``promoted`` / ``not promoted`` / ``promoted by hand``;
- ``crossfuse.reason`` — why, with the compared numbers;
- ``crossfuse.gate`` — JSON of every check (challenger, champion, limit, passed);
- ``crossfuse.metric.<name>`` — the exact value of each compared metric (``repr``);
- ``crossfuse.compared_to``, ``crossfuse.decided_by``, ``crossfuse.decided_at``,
  ``crossfuse.run_id``.

Example
-------
>>> r = register(cfg.registry, "crossfuse-sample", Path("model"), metrics, run_id)   # doctest: +SKIP
>>> promote_by_hand("crossfuse-sample", "4", reason="rollback: v5 misroutes night")  # doctest: +SKIP
>>> list_versions("crossfuse-sample")                                                # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import getpass
import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from crossfuse.config import RegistryConfig
from crossfuse.errors import UserError
from crossfuse.fusion.model import SPEC_FILE
from crossfuse.metrics import BOOTSTRAP_SCORES
from crossfuse.registry.lease import is_lease, promotion_lease
from crossfuse.registry.promotion import (
    Check,
    Decision,
    PairedBootstrap,
    decide_promotion,
    paired_bootstrap,
    require_metric,
)
from crossfuse.registry.serving_profile import measure_serving
from crossfuse.tracking import run_metrics, sqlite_store_lock

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
METRIC_TAG = "crossfuse.metric."


@dataclass(frozen=True)
class RegisterResult:
    model_name: str
    version: str
    promoted: bool
    reason: str
    champion_version: str
    checks: list[dict]
    serving: dict = field(default_factory=dict)  # the promoted model's serving profile


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def champion_metrics(client: MlflowClient, name: str) -> tuple[dict[str, float], str] | None:
    """(metrics, version) of the version aliased ``champion``, or None.

    Metrics come from its run, overridden by its exact ``crossfuse.metric.*`` tags.
    """
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    metrics = run_metrics(client.get_run(mv.run_id)) if mv.run_id else {}
    metrics.update({k[len(METRIC_TAG):]: float(v) for k, v in mv.tags.items()
                    if k.startswith(METRIC_TAG)})
    return metrics, str(mv.version)


def _write_decision(client: MlflowClient, name: str, version: str, run_id: str | None,
                    tags: dict[str, str]) -> None:
    """The same audit tags on the model version and on its run."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
        if run_id:
            client.set_tag(run_id, key, value)


def describe(result: RegisterResult, text: str) -> None:
    """Put ``text`` (Markdown) where the MLflow UI shows it first: the description of the
    active run and of the registered version."""
    mlflow.set_tag("mlflow.note.content", text)
    MlflowClient().update_model_version(result.model_name, result.version, description=text)


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


MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def log_pyfunc(model_dir: Path, input_example: dict | None = None):
    """Log the model folder as an MLflow pyfunc named ``model`` in the active run.

    Logged as models-from-code (:mod:`crossfuse.registry.pyfunc_model`): the model holds
    that source file, not a pickled object. ``input_example`` (one request row,
    ``{column: value}``) is saved beside it and shown in the UI.
    """
    example = None if input_example is None else pd.DataFrame([input_example])
    return mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE),
                                   artifacts={"model": str(model_dir)},
                                   signature=model_signature(model_dir),
                                   input_example=example,
                                   pip_requirements=_pip_requirements())


def model_tags(model_dir: Path) -> dict[str, str]:
    """What the version is: its modalities (``text`` for a text-only model), with
    ``fusion.method: auto`` the candidate that won, and which encoders were fine-tuned and how
    (``crossfuse.finetune.<modality>``, e.g. ``lora:8 on the last 3 blocks of minilm``)."""
    meta = json.loads((Path(model_dir) / SPEC_FILE).read_text())
    tags = {"crossfuse.modalities": "+".join(meta["dims"])}
    if meta.get("chosen"):
        tags["crossfuse.chosen"] = meta["chosen"]
    for m, entry in meta.get("encoders", {}).items():
        adapted = entry.get("adapted")
        tags[f"crossfuse.finetune.{m}"] = (
            f"{adapted['how']} on the last {adapted['blocks']} blocks of {entry['name']}"
            if adapted else f"none ({entry['name']} frozen)")
    return tags


PREDICTIONS_ARTIFACT = "evaluation/predictions.parquet"


def champion_predictions(client: MlflowClient, name: str) -> pd.DataFrame | None:
    """The champion run's test predictions (``id``, ``label``, ``predicted``), if it logged them."""
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=mv.run_id,
                                                       artifact_path=PREDICTIONS_ARTIFACT, dst_path=tmp)
            return pd.read_parquet(path, columns=["id", "label", "predicted"])
    except (MlflowException, OSError, KeyError, ValueError) as exc:
        log.info("no champion predictions to pair with (%s): comparing the numbers alone", exc)
        return None


def bootstrap_against(ours: pd.DataFrame | None, theirs: pd.DataFrame | None, gate: RegistryConfig,
                      labels: list[str]) -> PairedBootstrap | None:
    """Paired bootstrap of the challenger's and the champion's predictions on the same test rows.

    None (compare the numbers alone) unless both exist, cover exactly the same ids with the
    same labels, the metric can be computed from predictions, and ``gate.bootstrap`` > 0.
    """
    if ours is None or theirs is None or gate.bootstrap == 0 or gate.metric not in BOOTSTRAP_SCORES:
        return None
    pair = ours.merge(theirs, on="id", suffixes=("", "_champion"))
    if len(pair) != len(ours) or len(pair) != len(theirs) or \
            not (pair["label"] == pair["label_champion"]).all():
        return None
    index = {name: i for i, name in enumerate(labels)}
    if not set(pair["predicted_champion"]) <= set(index):
        return None
    codes = [pair[c].map(index).to_numpy() for c in ("label", "predicted", "predicted_champion")]
    return paired_bootstrap(*codes, num_classes=len(labels), metric=gate.metric,
                            resamples=gate.bootstrap)


def register(gate: RegistryConfig, model_name: str, model_dir: Path, metrics: dict[str, float],
             run_id: str, predictions: pd.DataFrame | None = None,
             data_tags: dict[str, str] | None = None,
             input_example: dict | None = None, hold: str | None = None,
             serving_inputs: pd.DataFrame | None = None,
             profile_cache: Path | None = None) -> RegisterResult:
    """Log and register ``model_dir`` as a new version of ``model_name`` (inside the active run).

    ``hold``: a reason the data gives never to promote this version, whatever its metrics
    (classes the training data lost); it becomes a failed check of the gate.

    ``metrics`` are the evaluation's; the gate compares them with the champion's.
    ``predictions`` (the evaluation's ``predictions.parquet``) lets the gate compare both
    models on the same test rows with a paired bootstrap. ``data_tags`` (validation's
    rejected-row count and warnings) go onto the version with the decision, so the
    audit shows what the data looked like. ``input_example``: one request row, logged with
    the model. ``serving_inputs``: raw requests on which a model that is promoted is profiled
    as served (:func:`crossfuse.registry.serving_profile.measure_serving`, kept in
    ``profile_cache``) before it becomes champion: a model that cannot answer them is not
    promoted.
    """
    client = MlflowClient()
    require_metric(metrics, gate.metric)  # before anything is logged
    info = log_pyfunc(Path(model_dir), input_example)
    # Decide and move the aliases as one step: a concurrent run must not compare against a
    # champion that is being replaced. The lease works on any backend; the file lock only
    # spares a SQLite store concurrent writers.
    with sqlite_store_lock(mlflow.get_tracking_uri()), promotion_lease(client, model_name):
        champion = champion_metrics(client, model_name)
        labels = json.loads((Path(model_dir) / SPEC_FILE).read_text())["labels"]
        pairable = (champion is not None and predictions is not None and gate.bootstrap > 0
                    and gate.metric in BOOTSTRAP_SCORES)  # else no download: nothing to pair
        paired = bootstrap_against(predictions, champion_predictions(client, model_name), gate,
                                   labels) if pairable else None
        decision: Decision = decide_promotion(metrics, *(champion or (None, None)), gate, paired)
        if hold:
            decision = Decision(False, hold, [*decision.checks,
                                              Check("data", None, None, None, False, hold)])
        serving = (measure_serving(Path(model_dir), serving_inputs, profile_cache)
                   if decision.promote and serving_inputs is not None else {})
        mv = mlflow.register_model(info.model_uri, model_name)
        client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
        if decision.promote:
            client.set_registered_model_alias(model_name, CHAMPION, mv.version)
        tags = {"crossfuse.decision": "promoted" if decision.promote else "not promoted",
                "crossfuse.reason": decision.reason,
                "crossfuse.gate": json.dumps(decision.as_dict()["checks"]),
                "crossfuse.compared_to": champion[1] if champion else "",
                "crossfuse.decided_by": "pipeline", "crossfuse.decided_at": _now(),
                "crossfuse.run_id": run_id, **model_tags(Path(model_dir)), **(data_tags or {})}
        tags.update({METRIC_TAG + k: repr(float(v))
                     for k, v in decision.compared_metrics().items()})
        _write_decision(client, model_name, str(mv.version), run_id, tags)
    champion_version = str(mv.version) if decision.promote else (champion[1] if champion else "")
    log.info("registered %s v%s: %s", model_name, mv.version, decision.reason)
    return RegisterResult(model_name=model_name, version=str(mv.version),
                          promoted=decision.promote, reason=decision.reason,
                          champion_version=champion_version,
                          checks=decision.as_dict()["checks"], serving=serving)


def promote_by_hand(model_name: str, version: str, reason: str | None = None,
                    user: str | None = None) -> dict[str, str]:
    """Move ``champion`` to ``version`` without the gate, leaving the same audit tags.

    Returns the tags written. Raises :class:`~crossfuse.errors.UserError` when the model or
    the version does not exist.
    """
    client = MlflowClient()
    require_model(client, model_name)
    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise UserError(f"model {model_name!r} has no version {version!r}; see "
                        f"`crossfuse models --model {model_name}`") from exc
    user = user or getpass.getuser()
    with promotion_lease(client, model_name):  # not in the middle of a pipeline's decision
        previous = champion_metrics(client, model_name)
        client.set_registered_model_alias(model_name, CHAMPION, mv.version)
        tags = {"crossfuse.decision": "promoted by hand",
                "crossfuse.reason": reason or f"promoted by hand by {user}",
                "crossfuse.compared_to": previous[1] if previous else "",
                "crossfuse.decided_by": user, "crossfuse.decided_at": _now()}
        _write_decision(client, model_name, str(mv.version), mv.run_id, tags)
    client.update_model_version(model_name, str(mv.version), description=(
        f"**Promoted to champion by hand** by {user} at {tags['crossfuse.decided_at']}: "
        f"{tags['crossfuse.reason']}\n\n{mv.description or ''}").strip())
    log.info("champion of %s -> v%s (by hand): %s", model_name, mv.version, tags["crossfuse.reason"])
    return tags


def registered_names(client: MlflowClient) -> list[str]:
    """Every registered model's name, sorted (all pages)."""
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page if not is_lease(m.name)]
        token = page.token
        if not token:
            return sorted(names)


def require_model(client: MlflowClient, name: str) -> None:
    """Raise :class:`~crossfuse.errors.UserError` naming the close names unless ``name`` is
    a registered model."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = registered_names(client)
        close = difflib.get_close_matches(name, known, n=1)
        raise UserError(f"no registered model {name!r} in this store"
                        f"{f'; did you mean {close[0]!r}?' if close else ''} (registered: "
                        f"{', '.join(known) or 'none yet; train one with `make run`'})") from None


def list_versions(model_name: str | None = None) -> list[dict]:
    """Every version (of one model, or of all), newest first: aliases, decision, metrics, reason."""
    client = MlflowClient()
    names = [model_name] if model_name else registered_names(client)
    if model_name:
        require_model(client, model_name)
    rows = []
    for name in names:
        # search results carry no aliases; the registered model has them all
        aliases = client.get_registered_model(name).aliases
        for mv in client.search_model_versions(f"name='{name}'"):
            metric_tags = {k[len(METRIC_TAG):]: v for k, v in mv.tags.items()
                           if k.startswith(METRIC_TAG)}
            rows.append({"model": name, "version": int(mv.version),
                         "aliases": ",".join(sorted(a for a, v in aliases.items()
                                                    if str(v) == str(mv.version))),
                         "decision": mv.tags.get("crossfuse.decision", ""),
                         "metrics": " ".join(f"{k}={float(v):.4f}"
                                             for k, v in sorted(metric_tags.items())),
                         "decided_by": mv.tags.get("crossfuse.decided_by", ""),
                         "reason": mv.tags.get("crossfuse.reason", ""),
                         "run_id": mv.run_id or ""})
    return sorted(rows, key=lambda r: (r["model"], -r["version"]))
