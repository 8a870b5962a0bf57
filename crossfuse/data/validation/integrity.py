"""Checks for data that parses but is wrong: ragged rows, split values, label variants,
duplicated content across splits or labels, and classes a split lacks.

Each check returns row issues (:class:`RowIssue`: line, id, column, reason), table
failures (the run stops whatever ``on_error`` says) or warnings (carried to the run's
tags and report), so every row in is counted as used or rejected.

Example
-------
>>> check_splits(frame, lines)                                # doctest: +SKIP
[RowIssue(line=7, id='s00005', column='split', reason="split 'TEST' is not one of ...")]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from crossfuse.config import RunConfig
from crossfuse.data.content import duplicate_groups
from crossfuse.data.manifest import Manifest, case_variants
from crossfuse.data.splits import SPLITS, has_split_column, split_problem
from crossfuse.data.validation.report import MAX_NAMED, RowIssue, named

ROW = "row"  # the column of an issue about the whole row


@dataclass
class Findings:
    """What a check found: row issues, table failures (stop the run) and warnings."""

    issues: list[RowIssue] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __iadd__(self, other: Findings) -> Findings:
        self.issues += other.issues
        self.failures += other.failures
        self.warnings += other.warnings
        return self


def _lines_of(value: str, labels: list[str], lines: list[int]) -> list[int]:
    return [line for line, label in zip(lines, labels, strict=True) if label == value]


def check_malformed(manifest: Manifest) -> list[RowIssue]:
    """Rows with more or fewer fields than the header (an unquoted comma, a lost field)."""
    width = len(manifest.header)
    issues = []
    for row, fields in manifest.malformed:
        cause = ("a field holding a comma must be quoted (\"a, b\")" if fields > width
                 else "a field is missing (add the empty field: ,,)")
        issues.append(RowIssue(manifest.lines[row], str(manifest.frame.iloc[row]["id"]), ROW,
                               f"row has {fields} fields but the header has {width}: {cause}",
                               kind="wrong number of fields"))
    return issues


def check_splits(frame: pd.DataFrame, lines: list[int]) -> list[RowIssue]:
    """With a ``split`` column, every row's value must be exactly train, val or test."""
    if not has_split_column(frame):
        return []
    return [RowIssue(lines[i], str(frame.iloc[i]["id"]), "split", problem, kind="unknown split")
            for i, value in enumerate(frame["split"]) if (problem := split_problem(value))]


def check_label_case(cfg: RunConfig, manifest: Manifest) -> Findings:
    """Labels that differ only by case: a table failure naming each variant and its lines
    (``label_case: error``), or a warning naming the merges (``fold``)."""
    found = Findings()
    if cfg.validation.label_case == "fold" and manifest.label_merges:
        merged = ", ".join(f"{v!r} -> {k!r}" for v, k in sorted(manifest.label_merges.items()))
        found.warnings.append(f"labels that differ only by case were merged "
                              f"(validation.label_case=fold): {merged}")
    if cfg.validation.label_case != "error":
        return found
    labels = manifest.frame["label"].tolist()
    for variants in case_variants(labels).values():
        where = "; ".join(f"{v!r} on lines {named(_lines_of(v, labels, manifest.lines))}"
                          for v in variants)
        found.failures.append(f"labels that differ only by case are separate classes unless "
                              f"merged: {where}. Fix the spelling, or set "
                              f"validation.label_case=fold to merge them into {variants[0]!r} "
                              f"(or keep to treat them as different classes)")
    return found


def check_duplicates(cfg: RunConfig, frame: pd.DataFrame, lines: list[int],
                     keys: list[str | None], splits: list[str]) -> Findings:
    """Rows with the same content under different ids, under ``validation.duplicates``.

    A group spanning splits leaks test rows into training; a group with two labels is
    one sample labelled twice. ``error`` rejects every row of such groups; ``drop``
    keeps the first row of every group and rejects the rest (all of a conflicting one);
    ``keep`` only warns. Same-split same-label copies are a warning under ``error``.
    """
    found = Findings()
    policy = cfg.validation.duplicates
    for group in duplicate_groups(keys):
        group_lines = [lines[i] for i in group]
        labels = sorted({frame.iloc[i]["label"] for i in group})
        spans = sorted({splits[i] for i in group})
        conflict, leak = len(labels) > 1, len(spans) > 1
        what = (f"the same content on lines {named(group_lines)} (ids "
                f"{', '.join(repr(str(frame.iloc[i]['id'])) for i in group[:MAX_NAMED])})")
        if conflict:
            what += f" with different labels {labels}"
        if leak:
            what += f" in different splits {spans} (test rows seen in training)"
        if policy == "keep" or (policy == "error" and not (conflict or leak)):
            found.warnings.append(f"duplicate rows: {what}")
            continue
        if policy == "error":
            rejected, reason = group, (f"duplicate: {what}; remove the copies, or set "
                                       f"validation.duplicates=drop to keep the first")
        elif conflict:
            rejected, reason = group, f"duplicate with conflicting labels dropped: {what}"
        else:
            rejected, reason = group[1:], (f"duplicate of line {group_lines[0]} dropped "
                                           f"(validation.duplicates=drop): {what}")
        kind = ("duplicate with conflicting labels" if conflict
                else "duplicate across splits" if leak else "duplicate")
        found.issues += [RowIssue(lines[i], str(frame.iloc[i]["id"]), ROW, reason, kind=kind)
                         for i in rejected]
    return found


def check_split_coverage(cfg: RunConfig, frame: pd.DataFrame, lines: list[int],
                         splits: list[str], bad: set[int]) -> Findings:
    """Every class among the valid rows needs rows in train, val and test.

    Without train rows the model can never predict the class; without val or test rows
    it is never early-stopped on or never measured. The run stops, or with
    ``on_error=drop`` the class's rows are rejected (counted).
    """
    found = Findings()
    valid = [i for i, line in enumerate(lines) if line not in bad and splits[i] in SPLITS
             and frame.iloc[i]["label"]]
    counts = Counter((frame.iloc[i]["label"], splits[i]) for i in valid)
    classes = sorted({frame.iloc[i]["label"] for i in valid})
    short = [label for label in classes if any(counts[(label, s)] == 0 for s in SPLITS)]
    if len(short) > MAX_NAMED and cfg.validation.on_error != "drop":
        found.failures.append(
            f"{len(short)} classes lack train, val or test rows ({named([repr(c) for c in short])}"
            f"): add rows of them, assign splits in a split column, or set "
            f"validation.on_error=drop to train without them")
        return found
    for label in short:
        lacking = [s for s in SPLITS if counts[(label, s)] == 0]
        have = ", ".join(f"{counts[(label, s)]} {s}" for s in SPLITS)
        meaning = ("the model could never predict it" if "train" in lacking
                   else "it would never be measured" if "test" in lacking
                   else "early stopping and calibration would never see it")
        message = (f"class {label!r} has no {' and no '.join(lacking)} rows ({have}): {meaning}. "
                   f"Add rows of it, assign splits in a split column, or set "
                   f"validation.on_error=drop to train without the class")
        if cfg.validation.on_error == "drop":
            found.issues += [RowIssue(lines[i], str(frame.iloc[i]["id"]), "label", message,
                                      kind="class missing from a split")
                             for i in valid if frame.iloc[i]["label"] == label]
        else:
            found.failures.append(message)
    return found
