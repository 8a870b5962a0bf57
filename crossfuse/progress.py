"""Progress bars that stay readable in logs: frequent on a terminal, every 10 s in a pipeline log."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(*args, **kwargs) -> tqdm:
    """``tqdm`` with a refresh interval suited to where stderr goes.

    >>> for _ in progress(range(3), desc="demo"): pass      # doctest: +SKIP
    """
    kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 10.0)
    return tqdm(*args, **kwargs)
