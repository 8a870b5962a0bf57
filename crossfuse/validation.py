"""Stage 1, validate: a Great Expectations suite over the manifest plus media checks.

The GX suite checks the table (ids present and unique, labels present and, if the
config declares them, in the label set, at least two classes, text lengths); the
media checks open every image (inside the dataset folder, exists, decodes, under
the pixel limit). Every problem becomes a :class:`RowIssue` naming the manifest
line, the sample id, the column and the reason, so counts add up:
``n_rows == n_valid + n_rejected``.

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
from PIL import Image

from crossfuse.config import RunConfig
from crossfuse.manifest import ManifestError, resolve_media

log = logging.getLogger(__name__)

HEADER_LINES = 1  # manifest line of row i is i + 1 + HEADER_LINES


@dataclass(frozen=True)
class RowIssue:
    """One problem with one manifest row. ``line`` is the 1-based line in manifest.csv."""

    line: int
    id: str
    column: str
    reason: str


@dataclass
class ValidationReport:
    """What validation found. ``success`` is False when any row or table check failed."""

    dataset: str
    n_rows: int
    issues: list[RowIssue] = field(default_factory=list)
    table_failures: list[str] = field(default_factory=list)
    expectations: list[dict] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)

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
        return not self.issues and not self.table_failures

    def summary(self, max_rows: int = 20) -> str:
        """A readable multi-line summary: counts, table failures, the first bad rows."""
        head = "passed" if self.success else "FAILED"
        lines = [f"validation {head} for {self.dataset}: {self.n_rows} rows, "
                 f"{self.n_valid} valid, {self.n_rejected} rejected"]
        lines += [f"  table: {msg}" for msg in self.table_failures]
        for issue in self.issues[:max_rows]:
            lines.append(f"  line {issue.line} (id={issue.id!r}) column {issue.column!r}: "
                         f"{issue.reason}")
        if len(self.issues) > max_rows:
            lines.append(f"  ... and {len(self.issues) - max_rows} more issues in rejects.csv")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(success=self.success, n_valid=self.n_valid, n_rejected=self.n_rejected)
        return d

    def write(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(self.to_dict(), indent=2))
        with open(out_dir / "rejects.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["line", "id", "column", "reason"])
            for i in self.issues:
                writer.writerow([i.line, i.id, i.column, i.reason])

    @classmethod
    def read(cls, out_dir: Path) -> ValidationReport:
        d = json.loads((Path(out_dir) / "report.json").read_text())
        return cls(dataset=d["dataset"], n_rows=d["n_rows"],
                   issues=[RowIssue(**i) for i in d["issues"]],
                   table_failures=d["table_failures"], expectations=d["expectations"],
                   class_counts=d["class_counts"])


class ValidationFailed(RuntimeError):
    """Raised by :func:`require_valid`; its message is the report's summary."""

    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report


def require_valid(report: ValidationReport) -> None:
    if not report.success:
        raise ValidationFailed(report)


def _line(index: int) -> int:
    return index + 1 + HEADER_LINES


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
    suite = gx.ExpectationSuite(name=f"crossfuse-{cfg.data.dataset_name()}")
    for e in exps:
        suite.add_expectation(e)
    return suite


_REASONS = {
    "expect_column_values_to_not_be_null": "missing value",
    "expect_column_values_to_be_unique": "duplicate id",
    "expect_column_values_to_be_in_set": "label not in validation.labels",
    "expect_column_value_lengths_to_be_between": "text length outside "
                                                 "[validation.min_text_chars, max_text_chars]",
}


def run_gx_suite(cfg: RunConfig, frame: pd.DataFrame, docs_dir: Path
                 ) -> tuple[list[RowIssue], list[str], list[dict]]:
    """Run the GX checkpoint on ``frame`` and build Data Docs into ``docs_dir``.

    Returns (row issues, table-level failures, one summary dict per expectation).
    """
    import great_expectations as gx

    # GX treats None as null; an empty cell in the manifest means missing.
    gx_frame = frame.replace({"": None}).reset_index(drop=True)
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
            if rows is None:
                table_failures.append(f"{kind} on {column!r}: observed "
                                      f"{r.result.get('observed_value')}")
                continue
            reason = _REASONS.get(kind, kind)
            for idx in rows:
                idx = int(idx["index"]) if isinstance(idx, dict) else int(idx)
                issues.append(RowIssue(_line(idx), str(frame.iloc[idx]["id"]), column, reason))
    return issues, table_failures, summaries


def check_image(root: Path, relative: str, max_pixels: int) -> str | None:
    """Return why the image at ``relative`` is unusable, or None if it decodes.

    Checks: confined to ``root``, exists, non-empty, under ``max_pixels``, decodes fully.
    """
    try:
        path = resolve_media(root, relative)
    except ManifestError as exc:
        return str(exc)
    if not path.is_file():
        return f"image file {relative} not found under {root}"
    if path.stat().st_size == 0:
        return f"image file {relative} is empty (0 bytes)"
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                return (f"image {relative} is {img.width}x{img.height}, above "
                        f"validation.max_image_pixels={max_pixels}")
            img.load()
    except Exception as exc:  # PIL raises many types for bad files
        return f"image {relative} does not decode: {type(exc).__name__}: {exc}"
    return None


def check_media(cfg: RunConfig, frame: pd.DataFrame, root: Path) -> list[RowIssue]:
    """Open every image the manifest names; one RowIssue per unusable one."""
    issues = []
    if "image" in cfg.modalities and "image" in frame.columns:
        for idx, (sample_id, rel) in enumerate(zip(frame["id"], frame["image"], strict=True)):
            if not rel:
                continue  # reported by the GX not-null expectation
            reason = check_image(root, rel, cfg.validation.max_image_pixels)
            if reason:
                issues.append(RowIssue(_line(idx), sample_id, "image", reason))
    return issues


def check_some_modality(cfg: RunConfig, frame: pd.DataFrame) -> list[RowIssue]:
    """With missing modalities allowed, a row must still have at least one."""
    if not cfg.validation.allow_missing_modalities:
        return []
    empty = (frame[cfg.modalities] == "").all(axis=1)
    return [RowIssue(_line(int(i)), str(frame.at[i, "id"]), "+".join(cfg.modalities),
                     "every modality is missing") for i in frame.index[empty]]


def check_class_sizes(cfg: RunConfig, frame: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    """Count rows per label; a class below ``min_samples_per_class`` cannot be split."""
    counts = Counter(label for label in frame["label"] if label)
    small = {k: n for k, n in counts.items() if n < cfg.validation.min_samples_per_class}
    failures = []
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
    frame = manifest.frame
    issues, table_failures, summaries = run_gx_suite(cfg, frame, out_dir / "data_docs")
    issues += check_media(cfg, frame, manifest.root)
    issues += check_some_modality(cfg, frame)
    class_counts, size_failures = check_class_sizes(cfg, frame)
    report = ValidationReport(dataset=cfg.data.dataset_name(), n_rows=len(frame),
                              issues=sorted(issues, key=lambda i: (i.line, i.column)),
                              table_failures=table_failures + size_failures,
                              expectations=summaries, class_counts=class_counts)
    report.write(out_dir)
    log.info(report.summary())
    return report
