"""Fetch the exact data a ``.dvc`` file pins from a DVC remote, without the git repository.

A pipeline step on a cluster has the run config, not the submitter's checkout. Given the
text of ``data.dvc`` (its md5 names the data version) and the remote's URL, this builds a
scratch DVC repository (``dvc init --no-scm``), adds the remote, and runs the real
``dvc pull``, which downloads every file and checks it against the md5s before the
folder appears. Credentials for object stores come from the usual environment
(``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``).

Example
-------
>>> fetch_dvc_data(Path("data.dvc").read_text(), "s3://bucket/crossfuse", Path("/tmp/data"))  # doctest: +SKIP
PosixPath('/tmp/data')
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


class DvcFetchError(RuntimeError):
    """The pinned data could not be pulled; the message holds DVC's own reason."""


def _dvc(args: list[str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise DvcFetchError(f"`dvc {' '.join(args)}` failed:\n{(done.stderr or done.stdout)[-2000:]}")


def fetch_dvc_data(dvc_file_text: str, remote_url: str, out_dir: Path) -> Path:
    """Materialise the output of ``dvc_file_text`` from ``remote_url`` at ``out_dir``.

    Raises ``ValueError`` for a .dvc file that pins no single folder or file, and
    :class:`DvcFetchError` when DVC cannot pull it (missing on the remote, corrupt, no access).
    """
    outs = (yaml.safe_load(dvc_file_text) or {}).get("outs") or []
    if len(outs) != 1 or not outs[0].get("md5") or not outs[0].get("path"):
        raise ValueError("the .dvc file must pin exactly one output with an md5 and a path")
    name = Path(outs[0]["path"]).name
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ValueError(f"{out_dir} exists; fetch into a new folder")
    with tempfile.TemporaryDirectory(prefix="crossfuse-dvc-") as work:
        work = Path(work)
        _dvc(["init", "--no-scm", "-q"], work)
        _dvc(["remote", "add", "-d", "origin", remote_url], work)
        (work / f"{name}.dvc").write_text(yaml.safe_dump({"outs": [{**outs[0], "path": name}]}))
        _dvc(["pull", "-q", f"{name}.dvc"], work)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / name), str(out_dir))
    return out_dir
