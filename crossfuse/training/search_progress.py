"""What the train stage says while ``auto`` chooses: candidate k of n, elapsed, an ETA.

A line at most every ``every`` seconds (10 by default), so a pipeline log gets a
heartbeat and not a flood; the estimate counts candidates and their fold models done.

Example
-------
>>> lines = []
>>> p = SearchProgress(["late", "unimodal:text"], lines.append, every=0.0, clock=iter(range(100)).__next__)
>>> p.start("late"); p.fold(2, 4); p.done()
>>> for line in lines: print(line)
  auto: candidate 1/2 late, fold model 2/4, 1 s elapsed, about 3 s left
  auto: candidate 1/2 late done, 2 s elapsed, about 2 s left
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _clock_text(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


class SearchProgress:
    """Throttled progress lines for a list of candidates (see the module)."""

    def __init__(self, names: list[str], say: Callable[[str], None], every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.names, self.say, self.every, self.clock = names, say, every, clock
        self.started = self.last = clock()
        self.index, self.name, self.fraction = -1, "", 0.0

    def start(self, name: str) -> None:
        """Candidate ``name`` starts (its search, then its cross-fit)."""
        self.index, self.name, self.fraction = self.index + 1, name, 0.0

    def fold(self, done: int, models: int) -> None:
        """``done`` of the candidate's ``models`` fold models are trained."""
        self.fraction = min(1.0, done / max(models, 1))
        self._maybe_say(f"candidate {self.index + 1}/{len(self.names)} {self.name}, "
                        f"fold model {done}/{models}")

    def done(self) -> None:
        """The current candidate is finished."""
        self.fraction = 1.0
        self._maybe_say(f"candidate {self.index + 1}/{len(self.names)} {self.name} done",
                        force=self.index + 1 == len(self.names))

    def _maybe_say(self, what: str, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        done = (self.index + self.fraction) / max(len(self.names), 1)
        # An estimate from the first tenth of the work is noise (an epoch-1 line said 72 min).
        left = f", about {_clock_text(elapsed * (1 - done) / done)} left" if 0.1 <= done < 1 else ""
        self.say(f"  auto: {what}, {_clock_text(elapsed)} elapsed{left}")
