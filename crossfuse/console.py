"""What a person reads during a run: the lines a stage says, marked so the runner can keep them.

A pipeline step prints a great deal that is not for people (KFP's executor input, Great
Expectations' registrations, library warnings). A stage's own summary lines go through
:func:`say`, which marks them; ``crossfuse run`` shows only marked lines (and the stage
boundaries) and writes everything to the run's log file (:mod:`pipelines.console`).
Outside a run the mark is harmless and :func:`unmark` removes it.

>>> say("rows in 60 = used 60 + rejected 0")                  # doctest: +SKIP
::crossfuse:: rows in 60 = used 60 + rejected 0
>>> unmark("   ::crossfuse:: hello")
'hello'
"""

from __future__ import annotations

MARK = "::crossfuse:: "


def say(text: str) -> None:
    """Print ``text`` (one or more lines) for the person running the pipeline."""
    for line in str(text).splitlines() or [""]:
        print(f"{MARK}{line}", flush=True)


def unmark(line: str) -> str | None:
    """The text of a marked line (any indentation before the mark), or None if unmarked."""
    at = line.find(MARK)
    return line[at + len(MARK):] if at >= 0 and not line[:at].strip() else None
