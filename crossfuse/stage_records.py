"""Content-addressed records of a stage's output folder: the same inputs never run twice.

A stage whose inputs (file contents), settings and code are unchanged finishes by
restoring its output folder from a record instead of recomputing it, as the feature
cache already does per item for extract. The key is a sha256 over

- the stage's name and crossfuse's own source (every ``.py`` file of the package), so a
  code change never serves an old result;
- the run config without the sections that only later stages read (``fusion``,
  ``train``, ``evaluate``, ``drift``, ``mlflow``, ``registry``, ``pipeline``, ``serving``; for
  validate, of ``preprocess`` only the split);
- every file under each input folder: relative path and bytes.

Records are written complete or not at all (a temporary folder, then a rename; on a storage
root, the files, then a ``.done`` marker: :mod:`crossfuse.storage`) and are restored as hard
links where the file system allows (no copy of the pixels), else copies.
Stages only read their inputs, so a linked file is never changed in place.

Example
-------
>>> key = record_key("preprocess", cfg, [Path("data")])                    # doctest: +SKIP
>>> restore(Path(".cache/crossfuse/stages"), "preprocess", key, Path("out"))  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from functools import cache
from pathlib import Path

from crossfuse import storage
from crossfuse.config import RunConfig

LATER_SECTIONS = ("fusion", "train", "evaluate", "drift", "predict", "mlflow", "registry",
                  "pipeline", "serving", "storage")
# Of an early section, the keys a stage reads when it does not read the rest.
ONLY_KEYS = {"validate": {"preprocess": ("split",)}}  # validation checks the split column


@cache
def code_fingerprint() -> str:
    """sha256 of crossfuse's Python source, 16 hex digits (one per process)."""
    package = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _hash_tree(h, root: Path) -> None:
    root = Path(root)
    if root.is_file():
        h.update(root.read_bytes())
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)


def tree_digest(root: Path) -> str:
    """sha256 of every file's path and bytes under ``root`` (or of one file): what a folder of
    data holds, whatever its names or timestamps."""
    h = hashlib.sha256()
    _hash_tree(h, Path(root))
    return h.hexdigest()


def record_key(stage: str, cfg: RunConfig, inputs: list[Path]) -> str:
    """The record's key: stage, code, the settings an early stage reads, the inputs' bytes.

    >>> from crossfuse.config import load_config
    >>> a = load_config(None, env={})
    >>> b = load_config(None, ["fusion.method=concat"], env={})
    >>> record_key("validate", a, []) == record_key("validate", b, [])
    True
    """
    settings = json.loads(cfg.to_json())
    for section in LATER_SECTIONS:
        settings.pop(section, None)
    settings["extract"].pop("cache_dir")  # where vectors are kept, not what they are
    for section, keys in ONLY_KEYS.get(stage, {}).items():
        settings[section] = {k: settings[section][k] for k in keys}
    h = hashlib.sha256()
    h.update(f"{stage}\0{code_fingerprint()}\0".encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    for folder in inputs:
        h.update(b"\0input\0")
        _hash_tree(h, Path(folder))
    return h.hexdigest()[:32]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def restore(root: Path, stage: str, key: str, out_dir: Path) -> bool:
    """Fill ``out_dir`` from the record ``key`` of ``stage``; False when there is none."""
    record = Path(root) / stage / key
    if not storage.pull_folder(record):
        return False
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(record, out_dir, copy_function=_link_or_copy)
    return True


def store(root: Path, stage: str, key: str, out_dir: Path) -> None:
    """Keep ``out_dir`` as the record ``key`` of ``stage`` (an existing record is kept)."""
    record = Path(root) / stage / key
    if not record.is_dir():
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        shutil.copytree(out_dir, tmp, copy_function=_link_or_copy)
        try:
            os.rename(tmp, record)
        except OSError:  # another run stored the same record first
            shutil.rmtree(tmp, ignore_errors=True)
    storage.push_folder(record)  # on a storage root: the files, then the marker
