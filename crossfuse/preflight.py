"""Fail fast: what would stop a run, found before any heavy work starts.

Checked, all at once so one message lists every problem with its fix:

- the MLflow tracking store: an ``http(s)`` server answers ``/health`` within a few
  seconds (MLflow's own client would retry for minutes); a SQLite file's folder is
  writable;
- every configured encoder can be built here (known name, packages installed, ``hf:``
  model on disk) — without loading it;
- every output folder (pipeline root, feature cache, checkpoints, local MLflow
  artifacts) can be created and written; a ``storage.root`` takes a write.

Example
-------
>>> preflight(load_config(None, ["mlflow.tracking_uri=http://127.0.0.1:9"]))   # doctest: +SKIP
Traceback (most recent call last):
PreflightError: cannot start the run:
  - MLflow tracking server http://127.0.0.1:9 is unreachable (...); start it ...
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from pathlib import Path

from crossfuse.config import RunConfig
from crossfuse.encoders import encoder_problem
from crossfuse.errors import UserError


class PreflightError(UserError, RuntimeError):
    """The run cannot start; the message lists each problem and what to do about it."""


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, else None.

    >>> sqlite_file("sqlite:///mlflow.db"), sqlite_file("http://127.0.0.1:5000")
    (PosixPath('mlflow.db'), None)
    """
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def tracking_problem(uri: str, timeout: float = 5.0) -> str | None:
    """Why the tracking store at ``uri`` is not usable, or None."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                if reply.status == 200:
                    return None
                return f"MLflow tracking server {uri} answered /health with HTTP {reply.status}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return (f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                    f"(`mlflow server --host 127.0.0.1 --port 5000`) or set MLFLOW_TRACKING_URI "
                    f"/ --set mlflow.tracking_uri=sqlite:///mlflow.db to track locally")
    if (database := sqlite_file(uri)) is not None:
        return folder_problem(database.parent, "the MLflow SQLite database")
    return None


def store_problem(uri: str) -> str | None:
    """Why a command that only reads the tracking store cannot use ``uri``, or None.

    A SQLite store must already exist (reading never creates one); a server must answer.

    >>> store_problem("sqlite:////nowhere/mlflow.db")[:36]
    'no MLflow store at /nowhere/mlflow.d'
    """
    if (path := sqlite_file(uri)) is not None:
        if path.is_file():
            return None
        return (f"no MLflow store at {path} (mlflow.tracking_uri={uri}); train a model first "
                f"(`make run` here), or point --set mlflow.tracking_uri=... / "
                f"MLFLOW_TRACKING_URI at your store")
    return tracking_problem(uri)


def require_store(uri: str) -> None:
    """Raise :class:`PreflightError` when :func:`store_problem` finds one."""
    problem = store_problem(uri)
    if problem:
        raise PreflightError(problem)


def folder_problem(folder: Path, role: str) -> str | None:
    """Why ``folder`` cannot be created and written (for ``role``), or None."""
    probe = Path(folder) / f".crossfuse-write-test-{uuid.uuid4().hex[:8]}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return (f"cannot write {role} folder {folder} ({type(exc).__name__}: {exc}); "
                f"choose a writable path in the config")
    return None


def problems(cfg: RunConfig, folders: bool = True) -> list[str]:
    """Every reason ``cfg`` cannot run here (empty when it can).

    ``folders`` False skips the output folders (a pipeline step in a container
    writes only its own KFP artifacts).
    """
    found = [tracking_problem(cfg.mlflow.tracking_uri), storage_problem(cfg)]
    found += [encoder_problem(name, modality, offline=cfg.extract.hf_offline)
              for modality, name in cfg.extract.encoders.items()]
    outputs = {"pipeline output (pipeline.pipeline_root)": cfg.pipeline.pipeline_root}
    if not cfg.storage.root:  # else each task's working copy is a folder of its own
        outputs["feature cache (extract.cache_dir)"] = cfg.extract.cache_dir
        outputs["checkpoint (train.checkpoint_dir)"] = cfg.train.checkpoint_dir
    if cfg.data.remote:
        outputs["pulled data (data.fetch_dir)"] = cfg.data.fetch_dir
    if "://" not in cfg.mlflow.artifact_root and not cfg.mlflow.served:
        outputs["MLflow artifact (mlflow.artifact_root)"] = cfg.mlflow.artifact_root
    if folders:
        found += [folder_problem(Path(path), role) for role, path in outputs.items()]
    return [p for p in found if p]


def storage_problem(cfg: RunConfig) -> str | None:
    """Why ``storage.root`` cannot hold run state, or None: it must be listable and take a
    write (a probe object, deleted again)."""
    if not cfg.storage.root:
        return None
    from crossfuse.storage import filesystem

    probe = None
    try:
        fs, root = filesystem(cfg.storage.root, cfg.storage.options)
        probe = f"{root}/.crossfuse-probe-{uuid.uuid4().hex[:8]}"
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
        return None
    except Exception as exc:  # any backend's error: the message is what a user can act on
        return (f"storage.root {cfg.storage.root} cannot be written ({type(exc).__name__}: "
                f"{str(exc)[:300]}); check that the bucket or folder exists, its credentials in "
                f"the environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, on a cluster "
                f"through pipeline.secret_env) and storage.options (e.g. endpoint_url)")


def preflight(cfg: RunConfig, folders: bool = True) -> None:
    """Raise :class:`PreflightError` listing every problem, or return when the run can start."""
    found = problems(cfg, folders)
    if found:
        raise PreflightError("cannot start the run:\n" + "\n".join(f"  - {p}" for p in found))
