"""Which registered model a batch is scored with, its files, and the config scoring runs under.

A model is named as ``NAME@ALIAS``, ``NAME/VERSION`` (or either behind ``models:/``);
``@ALIAS`` or ``/VERSION`` alone means the config's model. The alias is resolved to a
version once, at the start of a batch, so every step scores with the same version even
if the alias moves meanwhile.

Example
-------
>>> parse_model_spec("crossfuse-sample@champion", "x")
('crossfuse-sample', 'champion', None)
>>> parse_model_spec("models:/crossfuse-sample/3", "x")
('crossfuse-sample', None, '3')
>>> parse_model_spec("", "crossfuse-sample")
('crossfuse-sample', 'champion', None)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from crossfuse.config import RunConfig
from crossfuse.errors import UserError
from crossfuse.fusion.model import RUN_CONFIG_FILE, SPEC_FILE
from crossfuse.registry.register import CHAMPION

# Where the model folder lies inside a registered crossfuse pyfunc (log_pyfunc's artifact).
MODEL_FOLDER = Path("artifacts") / "model"
MODEL_REF_FILE = "model_ref.json"
PREDICTIONS_SUFFIX = "-predictions"


@dataclass(frozen=True)
class ModelRef:
    """One registered model version: ``name``, ``version``, the ``alias`` it was asked by (or
    "") and the ``run_id`` of the run that trained it."""

    name: str
    version: str
    alias: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def describe(self) -> str:
        """``crossfuse-sample v3 (champion)``"""
        return f"{self.name} v{self.version}" + (f" ({self.alias})" if self.alias else "")


def default_model_spec(cfg: RunConfig) -> str:
    """The model a batch scores with: ``predict.model``, else the config's model at ``@champion``."""
    return cfg.predict.model or f"{cfg.model_name()}@{CHAMPION}"


def parse_model_spec(spec: str, default_name: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``NAME@ALIAS`` / ``NAME/VERSION`` / ``models:/...``; a missing
    name is ``default_name``, a missing alias and version is ``champion``."""
    spec = (spec or "").strip()
    spec = spec[len("models:/"):] if spec.startswith("models:/") else spec
    if "@" in spec:
        name, alias = spec.split("@", 1)
        return name or default_name, alias or CHAMPION, None
    if "/" in spec:
        name, version = spec.rsplit("/", 1)
        if not version.isdigit():
            raise UserError(f"model {spec!r}: a version is a number, as in NAME/3 (or use "
                            f"NAME@ALIAS)")
        return name or default_name, None, version
    return spec or default_name, CHAMPION, None


def resolve_model(spec: str, default_name: str) -> ModelRef:
    """The version ``spec`` names now (MLflow must be configured). Raises ValueError saying
    which versions and aliases exist when it names none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias, version = parse_model_spec(spec, default_name)
    client = MlflowClient()
    try:
        mv = (client.get_model_version_by_alias(name, alias) if alias
              else client.get_model_version(name, version))
    except MlflowException as exc:
        try:
            model = client.get_registered_model(name)
            known = (f"it has aliases {sorted(model.aliases) or 'none'}; see "
                     f"`crossfuse models --model {name}`")
        except MlflowException:
            known = "no model of that name is registered; train one with `make run`"
        raise UserError(f"model {name}{'@' + alias if alias else '/' + str(version)} not found: "
                        f"{known}") from exc
    return ModelRef(name=name, version=str(mv.version), alias=alias or "", run_id=mv.run_id or "")


def fetch_model_dir(ref: ModelRef, out_dir: Path) -> Path:
    """Download the version's model folder (fusion head, spec, run config, drift reference)
    into ``out_dir``, with ``model_ref.json`` naming the version. Returns ``out_dir``."""
    import mlflow

    out_dir = Path(out_dir)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=tmp))
        if not (local / MODEL_FOLDER / SPEC_FILE).is_file():
            raise UserError(f"{ref.uri} is not a crossfuse model (no {MODEL_FOLDER / SPEC_FILE})")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(local / MODEL_FOLDER, out_dir)
    (out_dir / MODEL_REF_FILE).write_text(json.dumps(asdict(ref)))
    return out_dir


def read_model_ref(model_dir: Path) -> ModelRef:
    """The :class:`ModelRef` :func:`fetch_model_dir` left in ``model_dir``."""
    return ModelRef(**json.loads((Path(model_dir) / MODEL_REF_FILE).read_text()))


def model_labels(model_dir: Path) -> list[str]:
    """The model's class names, in class-id order."""
    return json.loads((Path(model_dir) / SPEC_FILE).read_text())["labels"]


def model_modalities(model_dir: Path) -> list[str]:
    """The modalities the model reads."""
    return list(json.loads((Path(model_dir) / SPEC_FILE).read_text())["dims"])


# What scoring takes from the config it is started with, not from the model's training run:
# where things are and how they run here. Everything else (modalities, encoders,
# preprocessing, validation rules, seed) is the model's.
RUNTIME_EXTRACT_FIELDS = ("cache_dir", "device", "backend", "batch_size", "gpu_batch_size",
                          "decode_workers", "shard_size")


def scoring_config(current: RunConfig, model_dir: Path, ref: ModelRef) -> RunConfig:
    """The config a batch is scored under: the model's training config, with this run's data
    folder, tracking, pipeline, drift and batch settings, runtime extract settings
    (:data:`RUNTIME_EXTRACT_FIELDS`) and ``validation.on_error``; rows lacking a modality are
    scored when either config allows them; the MLflow experiment is ``<model>-predictions``.

    >>> cfg = scoring_config(RunConfig(), Path("model"), ModelRef("m", "1", "", ""))  # doctest: +SKIP
    >>> cfg.experiment_name()                                                       # doctest: +SKIP
    'm-predictions'
    """
    trained = RunConfig.from_json((Path(model_dir) / RUN_CONFIG_FILE).read_text())
    extract = trained.extract.model_copy(update={f: getattr(current.extract, f)
                                                 for f in RUNTIME_EXTRACT_FIELDS})
    data = current.data.model_copy(update={"extra_targets": [], "extra_columns_file":
                                           current.data.extra_columns_file})
    validation = trained.validation.model_copy(update={
        "on_error": current.validation.on_error,
        "allow_missing_modalities": (current.validation.allow_missing_modalities
                                     or trained.validation.allow_missing_modalities)})
    mlflow = current.mlflow.model_copy(update={"experiment": ref.name + PREDICTIONS_SUFFIX})
    return trained.model_copy(update={
        "data": data, "extract": extract, "validation": validation, "mlflow": mlflow,
        "pipeline": current.pipeline, "drift": current.drift, "predict": current.predict,
        "registry": trained.registry.model_copy(update={"model_name": ref.name})})
