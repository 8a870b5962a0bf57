"""Fetch the exact data a ``.dvc`` file pins from a DVC remote, without the git repository.

A pipeline step on a cluster has the run config, not the submitter's checkout. So when
``data.remote`` is set, the run is *pinned* when it starts or is submitted
(:func:`pin_data_version` copies the ``.dvc`` file's output entry — its md5 names the
data version — into ``data.pinned``), and each step that reads the raw data
materialises that version on its own disk (:func:`materialise_data`). Fetching builds a
scratch DVC repository (``dvc init --no-scm``), adds the remote, and runs the real
``dvc pull``, which downloads every file and checks it against the md5s before the
folder appears. Credentials for object stores come from the usual environment
(``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``; on a cluster ``pipeline.secret_env``).

Example
-------
>>> cfg = pin_data_version(load_config(None, ["data.remote=s3://bucket/crossfuse"]))  # doctest: +SKIP
>>> materialise_data(cfg).data.path  # doctest: +SKIP
'.cache/crossfuse/data/c011b4d07aeaa5a0baa68f947ff0bef1'
>>> fetch_dvc_data(Path("data.dvc").read_text(), "s3://bucket/crossfuse", Path("/tmp/data"))  # doctest: +SKIP
PosixPath('/tmp/data')
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from crossfuse.config import RunConfig
from crossfuse.errors import UserError


class DvcFetchError(UserError, RuntimeError):
    """The pinned data could not be pulled; the message holds DVC's own reason."""


def _dvc(args: list[str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise DvcFetchError(f"`dvc {' '.join(args)}` failed:\n{(done.stderr or done.stdout)[-2000:]}")


def pinned_output(dvc_file_text: str) -> dict:
    """The one output entry (md5, path, size, nfiles, ...) of a .dvc file's text."""
    outs = (yaml.safe_load(dvc_file_text) or {}).get("outs") or []
    if len(outs) != 1 or not outs[0].get("md5") or not outs[0].get("path"):
        raise UserError("the .dvc file must pin exactly one output with an md5 and a path")
    return dict(outs[0])


def fetch_dvc_data(dvc_file_text: str, remote_url: str, out_dir: Path,
                   remote_options: dict[str, str] | None = None) -> Path:
    """Materialise the output of ``dvc_file_text`` from ``remote_url`` at ``out_dir``.

    ``remote_options`` are DVC remote settings (``dvc remote modify``), e.g.
    ``{"endpointurl": "http://minio:9000"}`` for an S3-compatible store.
    Raises ``ValueError`` for a .dvc file that pins no single folder or file, and
    :class:`DvcFetchError` when DVC cannot pull it (missing on the remote, corrupt, no access).
    """
    return fetch_pinned(pinned_output(dvc_file_text), remote_url, out_dir, remote_options)


def fetch_pinned(output: dict, remote_url: str, out_dir: Path,
                 remote_options: dict[str, str] | None = None) -> Path:
    """Like :func:`fetch_dvc_data`, from the output entry itself (``data.pinned``)."""
    name = Path(output["path"]).name
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir} exists; fetch into a new folder")
    with tempfile.TemporaryDirectory(prefix="crossfuse-dvc-") as work:
        work = Path(work)
        _dvc(["init", "--no-scm", "-q"], work)
        _dvc(["remote", "add", "-d", "origin", remote_url], work)
        for key, value in sorted((remote_options or {}).items()):
            _dvc(["remote", "modify", "origin", key, value], work)
        (work / f"{name}.dvc").write_text(yaml.safe_dump({"outs": [{**output, "path": name}]}))
        _dvc(["pull", "-q", f"{name}.dvc"], work)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / name), str(out_dir))
    return out_dir


def pin_data_version(cfg: RunConfig) -> RunConfig:
    """Copy the .dvc file's output entry into ``data.pinned`` when ``data.remote`` is set.

    A config without a remote, or already pinned, comes back unchanged. The dataset
    name is frozen too, so it does not become the md5 folder's name after the pull.
    """
    if not cfg.data.remote or cfg.data.pinned:
        return cfg
    dvc_file = Path(cfg.data.dvc_file or f"{Path(cfg.data.path)}.dvc")
    if not dvc_file.is_file():
        raise UserError(f"data.remote={cfg.data.remote!r} is set, but {dvc_file} does not exist: "
                        f"track the data with `dvc add {cfg.data.path}` and `dvc push`, or set "
                        f"data.dvc_file to the .dvc file that pins the version")
    pinned = cfg.model_copy(deep=True)
    pinned.data.pinned = pinned_output(dvc_file.read_text())
    pinned.data.name = cfg.data.dataset_name()
    return pinned


def materialise_data(cfg: RunConfig) -> RunConfig:
    """The config with ``data.path`` on this machine's disk, pulling the pinned version if needed.

    Without ``data.remote`` nothing happens. Each version is pulled once into
    ``data.fetch_dir/<md5>`` (checked by DVC); later steps and runs on the same disk reuse
    it. Concurrent pulls of one version each write their own folder and the first rename wins.
    """
    if not cfg.data.remote:
        return cfg
    if not cfg.data.pinned:
        raise UserError(f"data.remote={cfg.data.remote!r} is set but no version is pinned: start "
                        f"the run with `crossfuse run` or `crossfuse submit`, which pin "
                        f"data.dvc_file's version, or set data.pinned")
    dest = Path(cfg.data.fetch_dir) / str(cfg.data.pinned["md5"]).removesuffix(".dir")
    if not dest.is_dir():
        print(f"pulling data version {dest.name} from {cfg.data.remote}", flush=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        fetch_pinned(cfg.data.pinned, cfg.data.remote, partial, cfg.data.remote_options)
        try:
            partial.rename(dest)
        except OSError:  # another process renamed its copy first
            if not dest.is_dir():
                raise
            shutil.rmtree(partial)
    local = cfg.model_copy(deep=True)
    local.data.name = cfg.data.dataset_name()
    local.data.path = str(dest)
    return local
