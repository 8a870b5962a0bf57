"""A quiet console for ``crossfuse run``: every byte to the run's log file, a few lines to you.

KFP's local runner echoes each step's whole output (its executor input with the config,
Great Expectations' registration chatter, library warnings) into this process's stdout.
:class:`QuietConsole` takes over ``sys.stdout``/``sys.stderr`` for the run and

- writes everything, as it came, to the log file;
- shows a line when a stage starts and when it ends, with its duration and status;
- shows the lines a stage says for people (:func:`crossfuse.console.say`), indented
  under it;
- keeps the problems a stage reports for the user to fix
  (:func:`crossfuse.errors.say_error`) in :attr:`QuietConsole.user_errors`, for the command to
  print as its one error message;
- on any other failure (a bug), shows the failing stage's last lines: its traceback.

With ``verbose`` everything is shown, as before. Colour codes are dropped unless the
console is a terminal.

Example
-------
>>> with QuietConsole(Path("run.log")) as console:            # doctest: +SKIP
...     run_local(cfg)
"""

from __future__ import annotations

import io
import logging
import re
import sys
import time
from collections import deque
from pathlib import Path

from crossfuse.console import unmark
from crossfuse.errors import unmark_error

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
ENDED = re.compile(r"Task '([^']+)' finished with status (\w+)")
TAIL_LINES = 25


class QuietConsole(io.TextIOBase):
    """Stands in for stdout and stderr during a run (see the module)."""

    def __init__(self, log_path: Path, verbose: bool = False, out=None):
        self.log_path = Path(log_path)
        self.verbose = verbose
        self.out = out or sys.stdout
        self._buffer = ""
        self._started: dict[str, float] = {}
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.failed: list[str] = []
        self.user_errors: list[str] = []  # what the stages said the user can fix
        self._colour = bool(getattr(self.out, "isatty", lambda: False)())

    def __enter__(self) -> QuietConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        self._saved = sys.stdout, sys.stderr
        # Log handlers made earlier hold the old streams: point them here for the run.
        self._handlers = [h for h in logging.getLogger().handlers
                          if isinstance(h, logging.StreamHandler) and h.stream in self._saved]
        self._streams = [h.setStream(self) for h in self._handlers]
        sys.stdout = sys.stderr = self
        return self

    def __exit__(self, *exc) -> None:
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        sys.stdout, sys.stderr = self._saved
        for handler, stream in zip(self._handlers, self._streams, strict=True):
            handler.setStream(stream)
        self._log.close()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # progress bars then refresh sparsely (they go to the log)
        return False

    def write(self, text: str) -> int:
        self._log.write(text)
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self.out.flush()

    def _show(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _line(self, raw: str) -> None:
        line = ANSI.sub("", raw).rstrip("\r")
        if (error := unmark_error(line)) is not None:
            self.user_errors.append(error)
            if self.verbose:
                self._show(error)
            return
        if self.verbose:
            shown = raw if self._colour else line
            said = unmark(shown)
            self._show(shown if said is None else said)
            return
        line = line.rsplit("\r", 1)[-1]  # a progress bar's last state
        if started := STARTED.search(line):
            name = started.group(1)
            self._started[name] = time.monotonic()
            self._tail.clear()
            self._show(f"▶ {name}")
            return
        if ended := ENDED.search(line):
            name, status = ended.groups()
            seconds = time.monotonic() - self._started.get(name, time.monotonic())
            mark = "✓" if status == "SUCCESS" else "✗"
            self._show(f"{mark} {name} ({seconds:.0f} s){'' if status == 'SUCCESS' else ' ' + status}")
            if status != "SUCCESS":
                self.failed.append(name)
                if not self.user_errors:  # a bug: its traceback is what a maintainer needs
                    self._show(f"  last lines of {name} (all of it in {self.log_path}):")
                    for kept in self._tail:
                        self._show(f"  | {kept}")
            return
        said = unmark(line)
        if said is not None:
            self._show(f"  {said}")
        elif line.strip():
            self._tail.append(line.strip()[:300])
