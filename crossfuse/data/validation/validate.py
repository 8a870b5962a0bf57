"""Stage 1, validate: a Great Expectations suite over the manifest plus media checks.

The GX suite checks the table (ids present and unique, labels present and, if the
config declares them, in the label set, at least two classes, text lengths); the
text checks find cells that are blank or not valid UTF-8; the media checks open
every image (inside the dataset folder, exists, non-empty, an image, under the
pixel limit, decodes to the end). Every problem becomes a :class:`RowIssue` naming
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

import csv
import json
import logging
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from crossfuse.atomic import atomic_path, write_json
from crossfuse.config import RunConfig
from crossfuse.data.manifest import Manifest, ManifestError, resolve_media

log = logging.getLogger(__name__)



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
        lines = [f"validation {head} for {self.dataset}: {self.n_rows} rows in = "
                 f"{self.n_valid} valid + {self.n_rejected} rejected (on_error={self.on_error})"]
        lines += [f"  table: {msg}" for msg in self.table_failures]
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
                   class_counts=d["class_counts"], on_error=d.get("on_error", "fail"))


class ValidationFailed(RuntimeError):
    """Raised by :func:`require_valid`; its message is the report's summary."""

    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report


def require_valid(report: ValidationReport) -> None:
    """Raise :class:`ValidationFailed` unless the run may continue under the report's policy."""
    if not report.can_continue:
        raise ValidationFailed(report)


def _gx_suite(cfg: RunConfig, columns: list[str]):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    v = cfg.validation
    exps = [gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2)]
    if v.labels:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(v.labels)))
    for target in cfg.data.extra_targets:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=target))
    if not v.allow_missing_modalities:
        exps += [gxe.ExpectColumnValuesToNotBeNull(column=m) for m in columns]
    if "text" in columns:
        exps.append(gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=v.min_text_chars, max_value=v.max_text_chars))
    # The media/encoding checks run in Python; their findings enter the suite as one column
    # that must be empty, so Data Docs list those rows (with the reason) like any other.
    exps.append(gxe.ExpectColumnValuesToBeNull(column=ROW_CHECKS_COLUMN))
    suite = gx.ExpectationSuite(name=f"crossfuse-{cfg.data.dataset_name()}")
    for e in exps:
        suite.add_expectation(e)
    return suite


ROW_CHECKS_COLUMN = "crossfuse_row_checks"

_REASONS = {
    "expect_column_values_to_be_unique": "duplicate id",
    "expect_column_values_to_be_in_set": "label not in validation.labels",
    "expect_column_value_lengths_to_be_between": "text length outside "
                                                 "[validation.min_text_chars, max_text_chars]",
}


def run_gx_suite(cfg: RunConfig, frame: pd.DataFrame, lines: list[int], docs_dir: Path,
                 row_checks: list[RowIssue] = ()) -> tuple[list[RowIssue], list[str], list[dict]]:
    """Run the GX checkpoint on ``frame`` and build Data Docs into ``docs_dir``.

    ``lines[i]`` is row i's manifest line. ``row_checks`` (issues found in Python:
    media, encoding) are shown in Data Docs too, under ``crossfuse_row_checks``, but
    not returned again. Returns (row issues, table-level failures, one summary dict per
    expectation). The one-class check is reported by :func:`check_class_sizes` in words;
    GX keeps it in Data Docs.
    """
    import great_expectations as gx

    # GX treats None as null; an empty cell in the manifest means missing.
    gx_frame = frame.replace({"": None}).reset_index(drop=True)
    found: dict[int, list[str]] = {}
    for issue in row_checks:
        found.setdefault(issue.line, []).append(f"{issue.column}: {issue.reason}")
    gx_frame[ROW_CHECKS_COLUMN] = ["; ".join(found[line]) if line in found else None
                                   for line in lines]
    modalities = [m for m in cfg.modalities if m in gx_frame.columns]
    ctx = gx.get_context(mode="ephemeral")
    ctx.add_data_docs_site(site_name="crossfuse", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(Path(docs_dir).resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    batch = (ctx.data_sources.add_pandas("manifest").add_dataframe_asset("manifest")
             .add_batch_definition_whole_dataframe("all"))
    suite = ctx.suites.add(_gx_suite(cfg, modalities))
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name="manifest", data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name="crossfuse-validate", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["crossfuse"])],
        result_format={"result_format": "COMPLETE"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = checkpoint.run(batch_parameters={"dataframe": gx_frame})

    issues: list[RowIssue] = []
    table_failures: list[str] = []
    summaries: list[dict] = []
    for run in result.run_results.values():
        for r in run.results:
            kind = r.expectation_config.type
            column = r.expectation_config.kwargs.get("column", "")
            summaries.append({"expectation": kind, "column": column, "success": bool(r.success),
                              "unexpected_count": r.result.get("unexpected_count", 0)})
            if r.success:
                continue
            rows = r.result.get("unexpected_index_list")
            if kind == "expect_column_unique_value_count_to_be_between" or \
                    column == ROW_CHECKS_COLUMN:
                continue  # said in words by check_class_sizes / already issues
            if rows is None:
                table_failures.append(f"{kind} on {column!r}: observed "
                                      f"{r.result.get('observed_value')}")
                continue
            if kind == "expect_column_values_to_not_be_null":
                reason = f"missing {column}"
            else:
                reason = _REASONS.get(kind, kind)
            for idx in rows:
                idx = int(idx["index"]) if isinstance(idx, dict) else int(idx)
                issues.append(RowIssue(lines[idx], str(frame.iloc[idx]["id"]), column,
                                       reason))
    return issues, table_failures, summaries


def check_image(root: Path, relative: str, max_pixels: int) -> tuple[str, str] | None:
    """Return (kind, reason) when the image at ``relative`` is unusable, None when it decodes.

    Checks: confined to ``root``, exists, non-empty, an image, under ``max_pixels``,
    decodes to the end. CMYK, 16-bit, palette, alpha and EXIF-rotated images decode
    (preprocessing converts them to RGB).
    """
    try:
        path = resolve_media(root, relative)
    except ManifestError as exc:
        return "media path outside the dataset", str(exc)
    if not path.is_file():
        return "image not found", f"image file {relative} not found under {root}"
    if path.stat().st_size == 0:
        return "image empty", f"image file {relative} is empty (0 bytes)"
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                return "image too large", (
                    f"image {relative} is {img.width}x{img.height}, above validation."
                    f"max_image_pixels={max_pixels} (a decompression-bomb guard)")
            img.load()
    except UnidentifiedImageError:
        return "not an image", (f"image file {relative} is not an image PIL can read "
                                f"(wrong suffix or corrupt header)")
    except Image.DecompressionBombError as exc:
        return "image too large", f"image {relative} is above the pixel limit: {exc}"
    except Exception as exc:  # PIL raises many types for bad files
        if "truncated" in str(exc):
            return "image truncated", f"image file {relative} is truncated: {exc}"
        return "image does not decode", (f"image {relative} does not decode: "
                                         f"{type(exc).__name__}: {exc}")
    return None


def check_text(cfg: RunConfig, manifest: Manifest) -> list[RowIssue]:
    """Cells that are not valid UTF-8 (any column), and texts that are only whitespace."""
    frame, lines, issues = manifest.frame, manifest.lines, []
    for idx, column, at, byte in manifest.bad_utf8:
        if idx < len(frame):
            issues.append(RowIssue(lines[idx], str(frame.iloc[idx]["id"]), column,
                                   f"{column} is not valid UTF-8 (byte 0x{byte:02x} at "
                                   f"character {at}); re-save manifest.csv as UTF-8",
                                   kind="not valid UTF-8"))
    if "text" in cfg.modalities and "text" in frame.columns:
        for idx, value in enumerate(frame["text"]):
            if value and not value.strip():
                issues.append(RowIssue(lines[idx], str(frame.iloc[idx]["id"]), "text",
                                       "text is only whitespace"))
    return issues


def check_media(cfg: RunConfig, frame: pd.DataFrame, root: Path,
                lines: list[int]) -> list[RowIssue]:
    """Open every image the manifest names; one RowIssue per unusable one."""
    issues = []
    if "image" in cfg.modalities and "image" in frame.columns:
        for idx, (sample_id, rel) in enumerate(zip(frame["id"], frame["image"], strict=True)):
            if not rel:
                continue  # reported by the GX not-null expectation
            found = check_image(root, rel, cfg.validation.max_image_pixels)
            if found:
                issues.append(RowIssue(lines[idx], sample_id, "image",
                                       found[1], kind=found[0]))
    return issues


def check_some_modality(cfg: RunConfig, frame: pd.DataFrame, lines: list[int]) -> list[RowIssue]:
    """With missing modalities allowed, a row must still have at least one."""
    if not cfg.validation.allow_missing_modalities:
        return []
    empty = (frame[cfg.modalities].apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
    return [RowIssue(lines[i], str(frame.iloc[i]["id"]), "+".join(cfg.modalities),
                     "every modality is missing") for i in empty.nonzero()[0]]


def check_class_sizes(cfg: RunConfig, labels: list[str]) -> tuple[dict[str, int], list[str]]:
    """Count the valid rows per label: two classes at least, each big enough to split."""
    counts = Counter(label for label in labels if label)
    small = {k: n for k, n in counts.items() if n < cfg.validation.min_samples_per_class}
    failures = []
    if len(counts) < 2:
        failures.append(f"{len(counts)} class{'es' if len(counts) != 1 else ''} among the valid "
                        f"rows ({', '.join(sorted(counts)) or 'none'}): a classifier needs at "
                        f"least two labels")
    if small:
        failures.append(f"classes with fewer than validation.min_samples_per_class="
                        f"{cfg.validation.min_samples_per_class} samples: {small}; add samples "
                        f"or remove these classes")
    return dict(sorted(counts.items())), failures


def validate(cfg: RunConfig, data_root: Path, out_dir: Path) -> ValidationReport:
    """Validate the dataset at ``data_root``; write report, rejects and Data Docs to ``out_dir``.

    The report is returned whether or not validation passed; call
    :func:`require_valid` to stop on failure.
    """
    out_dir = Path(out_dir)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(data_root)})})
    manifest = cfg.load_manifest()
    frame, lines = manifest.frame, manifest.lines
    checked = (check_text(cfg, manifest) + check_media(cfg, frame, manifest.root, lines)
               + check_some_modality(cfg, frame, lines))
    issues, table_failures, summaries = run_gx_suite(cfg, frame, lines, out_dir / "data_docs",
                                                     row_checks=checked)
    issues += checked
    bad = {i.line for i in issues}
    class_counts, size_failures = check_class_sizes(
        cfg, [label for label, line in zip(frame["label"], lines, strict=True) if line not in bad])
    report = ValidationReport(dataset=cfg.data.dataset_name(), n_rows=len(frame),
                              issues=sorted(issues, key=lambda i: (i.line, i.column)),
                              table_failures=table_failures + size_failures,
                              expectations=summaries, class_counts=class_counts,
                              on_error=cfg.validation.on_error)
    report.write(out_dir)
    log.info("validated %s: %d rows, %d valid, %d rejected", report.dataset, report.n_rows,
             report.n_valid, report.n_rejected)
    return report
