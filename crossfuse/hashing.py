"""Content hashes: the one way crossfuse names an item, a file or a state by its bytes.

>>> content_hash("a") == content_hash(b"a")
True
>>> len(content_hash("a"))
64
"""

from __future__ import annotations

import hashlib


def content_hash(data: bytes | str) -> str:
    """sha256 hex digest of ``data`` (text is UTF-8 encoded)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()
