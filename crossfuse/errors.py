"""The one error type for problems the user can fix, and how a stage reports it.

A :class:`UserError`'s message says what is wrong and how to fix it (bad data, a missing
folder, model or tracking store, a bad setting). Every command prints such an error as its
message alone and exits 2; any other exception is a bug and keeps its traceback.

Inside a pipeline task the message is also said with :data:`ERROR_MARK`
(:func:`reported`), so the run's console shows it instead of the task's traceback, which
stays in the run's log file.

Example
-------
>>> try:
...     raise UserError("data folder nope/ does not exist; pass --data DIR")
... except UserError as exc:
...     print(exc)
data folder nope/ does not exist; pass --data DIR
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

ERROR_MARK = "::crossfuse-error:: "

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """A problem the user can fix; the message names it and the fix."""


def say_error(text: str) -> None:
    """Print ``text`` marked as a user error, for the run's console (one mark per line)."""
    for line in str(text).splitlines() or [""]:
        print(f"{ERROR_MARK}{line}", flush=True)


def unmark_error(line: str) -> str | None:
    """The text of a line :func:`say_error` printed (any indentation before it), else None.

    >>> unmark_error("    ::crossfuse-error:: no model 'x'")
    "no model 'x'"
    >>> unmark_error("Traceback (most recent call last):") is None
    True
    """
    at = line.find(ERROR_MARK)
    return line[at + len(ERROR_MARK):] if at >= 0 and not line[:at].strip() else None


def reported(stage: F) -> F:
    """Decorate a pipeline stage: a :class:`UserError` it raises is said (marked) first.

    The error is raised again, so the task still fails and its log keeps the traceback.
    """

    @functools.wraps(stage)
    def run(*args, **kwargs):
        try:
            return stage(*args, **kwargs)
        except UserError as exc:
            say_error(str(exc))
            raise

    return run
