"""Atomic file writes: write to a temporary name in the same folder, rename when complete.

A reader (a later stage, a rerun after a crash, another run sharing the cache) sees
either the whole previous file, the whole new one, or none — never half a file.
``os.replace`` is atomic within one filesystem, hence the temporary name sits next to
the target. The temporary name keeps the suffix so format-sniffing writers
(matplotlib, PIL) still work, and starts with a dot so folder scans skip it.

Example
-------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write_json(folder / "m.json", {"acc": 1.0}); (folder / "m.json").read_text()
'{\\n  "acc": 1.0\\n}'
>>> with atomic_path(folder / "x.txt") as tmp:
...     _ = tmp.write_text("done")
>>> sorted(p.name for p in folder.iterdir())
['m.json', 'x.txt']
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp"


def temporary_name(path: Path) -> Path:
    """A unique hidden sibling of ``path`` with the same suffix."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_MARK}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any, **dumps: Any) -> None:
    """Write ``obj`` as JSON (indent 2 unless told otherwise) to ``path`` atomically."""
    dumps.setdefault("indent", 2)
    write_text(path, json.dumps(obj, **dumps))


def atomic_save(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``{name: torch.Tensor}`` as a safetensors file under a temporary name, then rename it."""
    from safetensors.torch import save_file  # torch only where tensors are written

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
