"""Stage 1, validate: a Great Expectations suite over the manifest plus media checks.

The GX suite checks the table (ids present and unique, labels present and, if the
config declares them, in the label set, at least two classes, text lengths); the
text checks find cells that are blank or not valid UTF-8; the media checks open
every image (inside the dataset folder, exists, non-empty, an image, under the
pixel limit, decodes to the end); the integrity checks (:mod:`.integrity`) find rows
with the wrong number of fields, unknown split values, labels that differ only by
case, the same content under different ids across splits or labels, and classes a
split lacks. Every problem becomes a :class:`RowIssue` naming
the manifest line, the sample id, the column and the reason, so counts add up:
``n_rows == n_valid + n_rejected``.

What happens next is ``validation.on_error``: ``fail`` stops the run on any bad row;
``drop`` goes on without the rejected rows. Table-level failures (one class, a class
too small to split, no valid rows) stop the run under either policy.

Outputs written to ``out_dir``: ``report.json``, ``rejects.csv`` and ``data_docs/``
(the GX Data Docs site; open ``data_docs/index.html``).

Example
-------
>>> report = validate(load_config(None), Path("data"), Path("/tmp/v"))  # doctest: +SKIP
>>> print(report.summary())                                            # doctest: +SKIP
validation passed: 720 rows, 720 valid, 0 rejected
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from crossfuse.config import RunConfig
from crossfuse.data.content import row_keys
from crossfuse.data.manifest import ManifestError, load_run_manifest
from crossfuse.data.splits import grouped_splits
from crossfuse.data.validation.checks import (
    check_class_sizes,
    check_media,
    check_model_labels,
    check_some_modality,
    check_text,
    image_shape_warnings,
)
from crossfuse.data.validation.gx_suite import run_gx_suite
from crossfuse.data.validation.integrity import (
    check_duplicates,
    check_label_case,
    check_malformed,
    check_split_coverage,
    check_splits,
)
from crossfuse.data.validation.report import ValidationReport, named

log = logging.getLogger(__name__)


def classes_lost(labels: list[str], kept_labels: list[str]) -> list[str]:
    """Classes the manifest has that none of the kept rows has.

    >>> classes_lost(["a", "b", "b", ""], ["a"])
    ['b']
    """
    return sorted({label for label in labels if label} - set(kept_labels))


def lost_classes_warning(cfg: RunConfig, lost: list[str], labels: list[str]) -> str:
    """The warning that names the classes the kept rows no longer have."""
    counts = Counter(labels)
    gate = ("the gate will still promote it (validation.allow_class_loss=true)"
            if cfg.validation.allow_class_loss else
            "the gate will not promote a model that lacks them unless "
            "validation.allow_class_loss=true")
    return (f"classes lost: {named([f'{c!r} ({counts[c]} rows)' for c in lost])} are in the "
            f"manifest but none of their rows is used "
            f"(every rejected row and why: rejects.csv); the model cannot predict them, and "
            f"{gate}")


def validate(cfg: RunConfig, data_root: Path, out_dir: Path,
             model_labels: list[str] | None = None) -> ValidationReport:
    """Validate the dataset at ``data_root``; write report, rejects and Data Docs to ``out_dir``.

    The report is returned whether or not validation passed; call
    :func:`require_valid` to stop on failure. Nothing raises out of here for bad data: a
    manifest that cannot be read at all gives a report with no rows and one table failure
    that says why.

    ``model_labels`` (the classes of a trained model) validates data to be *scored* by it:
    the same row checks, but labels are optional, a label that is present must be one of
    ``model_labels``, and the checks that only matter for training (splits, class sizes,
    the same content in two splits) are left out.
    """
    out_dir = Path(out_dir)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(data_root)})})
    scoring = model_labels is not None
    try:
        manifest = load_run_manifest(cfg, labels_optional=scoring)
    except ManifestError as exc:
        report = ValidationReport(dataset=cfg.data.dataset_name(), n_rows=0,
                                  table_failures=[str(exc)], on_error=cfg.validation.on_error)
        report.write(out_dir)
        return report
    frame, lines = manifest.frame, manifest.lines
    checked = (check_malformed(manifest) + check_text(cfg, manifest)
               + check_media(cfg, frame, manifest.root, lines)
               + check_some_modality(cfg, frame, lines))
    found = check_label_case(cfg, manifest)
    if scoring:
        checked += found.issues + check_model_labels(frame, lines, model_labels)
    else:
        keys, media = row_keys(frame, manifest.root, cfg.modalities)
        checked += check_splits(frame, lines)
        # Copies of one sample are one group, so computed splits never part them: this
        # only finds copies that a split column parts, or that disagree on the label.
        found += check_duplicates(cfg, frame, lines, keys,
                                  grouped_splits(frame, cfg.preprocess.split, keys, media))
        checked += found.issues
    issues, table_failures, summaries = run_gx_suite(cfg, frame, lines, out_dir / "data_docs",
                                                     row_checks=checked, labelled=not scoring)
    issues += checked
    failures, warnings = table_failures + found.failures, list(found.warnings)
    if not scoring:
        # The split of the rows that are left, as preprocess will compute it.
        rejected = {issue.line for issue in issues}
        kept = [row for row, line in enumerate(lines) if line not in rejected]
        splits = [""] * len(lines)
        for row, split in zip(kept, grouped_splits(frame.iloc[kept], cfg.preprocess.split,
                                                   [keys[r] for r in kept],
                                                   [media[r] for r in kept]), strict=True):
            splits[row] = split
        coverage = check_split_coverage(cfg, frame, lines, splits, rejected)
        issues += coverage.issues
        failures += coverage.failures
        warnings += coverage.warnings
    bad = {i.line for i in issues}
    warnings += image_shape_warnings(cfg, frame, manifest.root, lines, bad)
    valid_labels = [label for label, line in zip(frame["label"], lines, strict=True)
                    if line not in bad]
    class_counts, size_failures = check_class_sizes(cfg, valid_labels)
    lost = [] if scoring else classes_lost(frame["label"].tolist(), valid_labels)
    if lost:
        warnings.append(lost_classes_warning(cfg, lost, frame["label"].tolist()))
    report = ValidationReport(dataset=cfg.data.dataset_name(), n_rows=len(frame),
                              issues=sorted(issues, key=lambda i: (i.line, i.column)),
                              table_failures=failures + ([] if scoring else size_failures),
                              expectations=summaries, class_counts=class_counts,
                              on_error=cfg.validation.on_error, warnings=warnings,
                              classes_lost=lost)
    report.write(out_dir)
    log.info("validated %s: %d rows, %d valid, %d rejected", report.dataset, report.n_rows,
             report.n_valid, report.n_rejected)
    return report
