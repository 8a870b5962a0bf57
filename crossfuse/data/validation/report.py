"""What validation found: one :class:`RowIssue` per bad row and column, and the report.

Counts add up: ``n_rows == n_valid + n_rejected``. The report is written as
``report.json`` and ``rejects.csv`` (one line per issue) and read back by later stages.

>>> r = ValidationReport("d", n_rows=3, issues=[RowIssue(2, "a", "text", "missing text")])
>>> r.n_valid, r.n_rejected, r.success
(2, 1, False)
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crossfuse.atomic import atomic_path, write_json
from crossfuse.errors import UserError

MAX_NAMED = 10  # lines, classes or files a message names before it says how many more


def named(items: list) -> str:
    """The first :data:`MAX_NAMED` of ``items``, then how many more.

    >>> named(list(range(12)))
    '0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more'
    """
    shown = ", ".join(str(item) for item in items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


@dataclass(frozen=True)
class RowIssue:
    """One problem with one manifest row. ``line`` is the 1-based line in manifest.csv."""

    line: int
    id: str
    column: str
    reason: str
    kind: str = ""  # the reason without its specifics, for counting; defaults to the reason

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.reason)


@dataclass
class ValidationReport:
    """What validation found. ``success`` is False when any row or table check failed."""

    dataset: str
    n_rows: int
    issues: list[RowIssue] = field(default_factory=list)
    table_failures: list[str] = field(default_factory=list)
    expectations: list[dict] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    on_error: str = "fail"
    warnings: list[str] = field(default_factory=list)  # not failures: carried to tags and report
    classes_lost: list[str] = field(default_factory=list)  # in the manifest, none of it kept

    @property
    def rejected_lines(self) -> set[int]:
        return {i.line for i in self.issues}

    @property
    def n_rejected(self) -> int:
        return len(self.rejected_lines)

    @property
    def n_valid(self) -> int:
        return self.n_rows - self.n_rejected

    @property
    def success(self) -> bool:
        """Every row and table check passed."""
        return not self.issues and not self.table_failures

    @property
    def can_continue(self) -> bool:
        """The run may go on: clean, or bad rows dropped under ``on_error: drop``."""
        if self.table_failures or self.n_valid == 0:
            return False
        return self.success or self.on_error == "drop"

    def reasons(self) -> dict[str, int]:
        """Issues per kind (a row with two problems counts under both)."""
        return dict(Counter(i.kind for i in self.issues).most_common())

    def summary(self, max_rows: int = 20) -> str:
        """A readable multi-line summary: counts, table failures, the first bad rows, the fix."""
        head = ("passed" if self.success else
                "passed with rows dropped" if self.can_continue else "FAILED")
        if self.n_rows == 0 and self.table_failures:  # the manifest could not be read
            lines = [f"validation {head} for {self.dataset}: its manifest could not be read as "
                     f"a dataset, so no row was checked"]
        else:
            lines = [f"validation {head} for {self.dataset}: {self.n_rows} rows in = "
                     f"{self.n_valid} valid + {self.n_rejected} rejected (on_error={self.on_error})"]
        lines += [f"  table: {msg}" for msg in self.table_failures]
        lines += [f"  warning: {msg}" for msg in self.warnings]
        for issue in self.issues[:max_rows]:
            lines.append(f"  line {issue.line} (id={issue.id!r}) column {issue.column!r}: "
                         f"{issue.reason}")
        if len(self.issues) > max_rows:
            lines.append(f"  ... and {len(self.issues) - max_rows} more issues in rejects.csv")
        if self.issues:
            lines.append("  by reason: " + ", ".join(f"{k} ({n})" for k, n in self.reasons().items()))
        if self.issues and not self.table_failures and self.on_error == "fail":
            lines.append("  fix the rows above (every one is in rejects.csv), or run with "
                         "--set validation.on_error=drop to train without them")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(success=self.success, n_valid=self.n_valid, n_rejected=self.n_rejected)
        return d

    def write(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "rejects.csv") as tmp, open(tmp, "w", newline="",
                                                                 encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["line", "id", "column", "kind", "reason"])
            for i in self.issues:
                writer.writerow([i.line, i.id, i.column, i.kind, i.reason])
        write_json(out_dir / "report.json", self.to_dict())

    @classmethod
    def read(cls, out_dir: Path) -> ValidationReport:
        d = json.loads((Path(out_dir) / "report.json").read_text())
        return cls(dataset=d["dataset"], n_rows=d["n_rows"],
                   issues=[RowIssue(**i) for i in d["issues"]],
                   table_failures=d["table_failures"], expectations=d["expectations"],
                   class_counts=d["class_counts"], on_error=d.get("on_error", "fail"),
                   warnings=d.get("warnings", []), classes_lost=d.get("classes_lost", []))


WARNING_TAG = "crossfuse.validation.warning."
CLASSES_LOST_TAG = "crossfuse.validation.classes_lost"
MAX_WARNING_TAGS = 20


def validation_tags(report: ValidationReport) -> dict[str, str]:
    """The run's data-quality tags: rejected rows, warning count, each warning (first 20).

    >>> validation_tags(ValidationReport("d", 5, warnings=["duplicate rows: ..."]))
    {'crossfuse.validation.rejected': '0', 'crossfuse.validation.warnings': '1', \
'crossfuse.validation.warning.01': 'duplicate rows: ...'}
    """
    tags = {"crossfuse.validation.rejected": str(report.n_rejected),
            "crossfuse.validation.warnings": str(len(report.warnings))}
    if report.classes_lost:
        tags[CLASSES_LOST_TAG] = ", ".join(report.classes_lost)[:4000]
    for i, text in enumerate(report.warnings[:MAX_WARNING_TAGS], start=1):
        tags[f"{WARNING_TAG}{i:02d}"] = text[:4000]
    return tags


def warnings_from_tags(tags: dict[str, str]) -> list[str]:
    """The warnings :func:`validation_tags` put on a run, in order."""
    return [tags[k] for k in sorted(tags) if k.startswith(WARNING_TAG)]


class ValidationFailed(UserError, RuntimeError):
    """Raised by :func:`require_valid`; its message is the report's summary."""

    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report


def require_valid(report: ValidationReport) -> None:
    """Raise :class:`ValidationFailed` unless the run may continue under the report's policy."""
    if not report.can_continue:
        raise ValidationFailed(report)
