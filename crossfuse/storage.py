"""Run state on one storage root: a local folder, a mounted volume or an object store.

On one machine every stage shares a disk, so the feature cache, checkpoints and stage
records just sit in local folders. On a cluster each KFP task is a fresh pod with an empty
disk. Whatever a later task, a retry or the next run reads then lives under
``storage.root`` (an fsspec URL: ``s3://bucket/prefix``, ``gs://``, ``abfs://``,
``file:///mnt/shared``, or a plain path)::

    <root>/features/...            the feature cache (extract.cache_dir's layout), with
                                   onnx/ (encoder exports) and noised/ (robustness inputs)
    <root>/checkpoints/<key>.pt    the training loop's state after each epoch
    <root>/stages/<stage>/<key>/   stage records, and <stage>/<key>.done, written last

:func:`attach` (the first thing every stage does) points the config's three local folders
at a working copy on the task's own disk and remembers which remote folder each mirrors.
Code that reads state calls :func:`pull` first (it fetches what the working copy lacks);
code that writes state calls :func:`push` right after. With ``storage.root`` unset both are
no-ops and the local folders are the state, as before.

Writes are atomic on every store. One file is one PUT on an object store (readers see all
of it or nothing; no rename is needed or available). On a file system it is a temporary
name, then a rename. A folder of several files (a stage record) counts only once its
``.done`` marker, written after every file, exists: :func:`pull_folder` ignores a folder
without one. Files in the cache are immutable or named by content; a checkpoint is the
one file that is overwritten, always whole.

Example
-------
>>> cfg = attach(cfg)                                   # doctest: +SKIP
>>> pull(Path(cfg.train.checkpoint_dir) / "k.pt")       # doctest: +SKIP
1
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossfuse.config import RunConfig

log = logging.getLogger(__name__)

DONE = ".done"  # suffix of a folder's completion marker
KINDS = ("features", "checkpoints", "stages")


@dataclass(frozen=True)
class Remote:
    """One local folder's counterpart on the storage root."""

    fs: Any  # an fsspec AbstractFileSystem
    path: str  # the folder on ``fs``, no trailing slash

    def child(self, relative: str) -> str:
        return f"{self.path}/{relative}" if relative and relative != "." else self.path

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        return bool({"file", "local"} & set(protocol if isinstance(protocol, tuple) else (protocol,)))


_MIRRORS: dict[Path, Remote] = {}  # local working folder -> its folder on the root


def filesystem(root: str, options: dict[str, Any]) -> tuple[Any, str]:
    """(fsspec filesystem, path on it) of a storage root URL or local path."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(root, **options)
    return fs, path.rstrip("/")


@cache
def _task_dir(root: str) -> Path:
    """This process's working copy of ``root``: a temporary folder, removed when the process
    exits (one per root: a copy never mixes two roots' files)."""
    folder = Path(tempfile.mkdtemp(prefix="crossfuse-state-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def attach(cfg: RunConfig) -> RunConfig:
    """The config a task runs with: with ``storage.root`` set, the feature cache, checkpoint
    and stage-record folders are a working copy on this task's disk that mirrors
    ``<root>/features``, ``<root>/checkpoints`` and ``<root>/stages``; unset, ``cfg`` itself.

    >>> from crossfuse.config import load_config
    >>> plain = load_config(None, env={})
    >>> attach(plain) is plain
    True
    """
    if not cfg.storage.root:
        return cfg
    work = Path(cfg.storage.work_dir) if cfg.storage.work_dir else _task_dir(cfg.storage.root)
    fs, root = filesystem(cfg.storage.root, cfg.storage.options)
    out = cfg.model_copy(deep=True)
    out.extract.cache_dir = str(work / "features")
    out.train.checkpoint_dir = str(work / "checkpoints")
    if cfg.pipeline.stage_cache_dir:  # null still turns records off
        out.pipeline.stage_cache_dir = str(work / "stages")
    for kind in KINDS:
        (work / kind).mkdir(parents=True, exist_ok=True)
        _MIRRORS[(work / kind).resolve()] = Remote(fs, f"{root}/{kind}")
    log.info("run state on %s (working copy %s)", cfg.storage.root, work)
    return out


def detach_all() -> None:
    """Forget every mirror (tests; a process that attaches another root)."""
    _MIRRORS.clear()


def _locate(path: Path) -> tuple[Remote, str] | None:
    """(remote folder, path relative to it) of a path inside a mirrored working folder."""
    resolved = Path(os.path.abspath(path))
    for local, remote in _MIRRORS.items():
        if resolved == local or local in resolved.parents:
            return remote, resolved.relative_to(local).as_posix()
    return None


def remote_url(path: Path) -> str | None:
    """Where ``path`` of a working copy lives on the storage root (None: not mirrored)."""
    found = _locate(Path(path))
    if found is None:
        return None
    remote, relative = found
    return remote.fs.unstrip_protocol(remote.child(relative))


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def _remote_files(remote: Remote, where: str) -> dict[str, str]:
    """{path relative to ``where``: full remote path} of the files under ``where`` (or the file).

    Only entries the store calls files: s3fs can answer a prefix that another task is
    filling with the prefix itself, as a directory, and a GET of that key finds nothing.
    """
    try:
        found = remote.fs.find(where, detail=True)
    except FileNotFoundError:
        return {}
    base = where.rstrip("/")
    files = {}
    for full, info in found.items():
        if info.get("type") != "file":
            continue
        full = full.rstrip("/")
        relative = "" if full == base else full[len(base) + 1:] if full.startswith(base + "/") else None
        if relative is not None and not _hidden(relative):
            files[relative] = full
    return files


def _download(remote: Remote, source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        remote.fs.get_file(source, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _upload(remote: Remote, source: Path, target: str) -> None:
    if remote.is_local:  # a file system: whole file under a temporary name, then a rename
        parent, _, name = target.rpartition("/")
        remote.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.part"
        remote.fs.put_file(str(source), tmp)
        remote.fs.mv(tmp, target)
    else:  # an object store: one PUT is all or nothing
        remote.fs.put_file(str(source), target)


def pull(path: Path) -> int:
    """Fetch the files of ``path`` (a file or a folder of a working copy) that the working
    copy lacks from the storage root; returns how many. A no-op outside a mirror."""
    found = _locate(Path(path))
    if found is None:
        return 0
    remote, relative = found
    fetched = 0
    for rel, full in _remote_files(remote, remote.child(relative)).items():
        local = Path(path) / rel if rel else Path(path)
        if not local.exists():
            try:
                _download(remote, full, local)
            except FileNotFoundError:  # listed, then gone (removed meanwhile): as if not listed
                log.warning("%s was listed on the storage root but is gone; skipped", full)
                continue
            fetched += 1
    if fetched:
        log.info("fetched %d files of %s from %s", fetched, path, remote.fs.unstrip_protocol(
            remote.child(relative)))
    return fetched


def push(path: Path, replace: bool = False) -> int:
    """Send the files of ``path`` (a file or a folder of a working copy) that the storage root
    lacks; ``replace`` also sends those it has (a checkpoint, rewritten each epoch). Returns
    how many. A no-op outside a mirror."""
    path = Path(path)
    found = _locate(path)
    if found is None or not path.exists():
        return 0
    remote, relative = found
    where = remote.child(relative)
    there = {} if replace else _remote_files(remote, where)
    if path.is_file():
        files = {"": path}
    else:
        files = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*"))
                 if p.is_file() and not _hidden(p.relative_to(path).as_posix())}
    sent = 0
    for rel, local in files.items():
        if rel not in there:
            _upload(remote, local, f"{where}/{rel}" if rel else where)
            sent += 1
    return sent


def push_folder(folder: Path) -> int:
    """:func:`push` a folder of several files, then its ``.done`` marker (the list of its
    files): readers trust the folder only once the marker is there."""
    folder = Path(folder)
    found = _locate(folder)
    if found is None:
        return 0
    sent = push(folder)
    remote, relative = found
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    marker = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}{DONE}")
    marker.write_text(json.dumps({"files": files}))
    try:
        _upload(remote, marker, remote.child(relative) + DONE)
    finally:
        marker.unlink(missing_ok=True)
    return sent


def pull_folder(folder: Path) -> bool:
    """Fetch a folder written by :func:`push_folder` when the working copy lacks it: only a
    complete one (its marker exists), into a temporary sibling, then renamed. Returns
    whether ``folder`` now exists locally."""
    folder = Path(folder)
    if folder.exists():
        return True
    found = _locate(folder)
    if found is None:
        return False
    remote, relative = found
    where = remote.child(relative)
    if not remote.fs.exists(where + DONE):
        return False
    files = json.loads(remote.fs.cat_file(where + DONE))["files"]
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        for rel in files:
            _download(remote, f"{where}/{rel}", tmp / rel)
        tmp.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, folder)
    except OSError:
        if not folder.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def remove(path: Path) -> None:
    """Delete the storage root's copy of ``path`` (a file or a folder), if any: work that is
    done (a training's checkpoints once its model is saved). A no-op outside a mirror."""
    found = _locate(Path(path))
    if found is None:
        return
    remote, relative = found
    where = remote.child(relative)
    if remote.fs.exists(where):
        remote.fs.rm(where, recursive=True)
