"""The Great Expectations side of validation: the suite, the checkpoint, and reading its result.

Setup (:func:`gx_checkpoint`: an ephemeral context, the suite, Data Docs) is apart from
parsing (:func:`parse_results`: GX's result -> :class:`RowIssue` rows and table failures),
so each can be read and tested alone. A failed GX checkpoint does not raise: its result
is parsed.

Example
-------
>>> issues, table, summaries = run_gx_suite(cfg, frame, lines, Path("docs"))   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from crossfuse.config import RunConfig
from crossfuse.data.validation.checks import TEXT_LENGTH
from crossfuse.data.validation.report import RowIssue

# The media/encoding checks run in Python; their findings enter the suite as one column
# that must be empty, so Data Docs list those rows (with the reason) like any other.
ROW_CHECKS_COLUMN = "crossfuse_row_checks"


def expectation_suite(cfg: RunConfig, columns: list[str], labelled: bool = True):
    """The manifest's expectations: ids, labels, modality columns, text lengths, row checks.

    ``labelled=False`` (data to score): labels and extra targets may be missing.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    v = cfg.validation
    exps = [gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id")]
    if labelled:
        exps += [gxe.ExpectColumnValuesToNotBeNull(column="label"),
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


_REASONS = {
    "expect_column_values_to_be_unique": "duplicate id",
    "expect_column_values_to_be_in_set": "label not in validation.labels",
    "expect_column_value_lengths_to_be_between": TEXT_LENGTH,
}


def gx_checkpoint(cfg: RunConfig, modalities: list[str], docs_dir: Path, labelled: bool = True):
    """An ephemeral GX context with the suite, a whole-dataframe batch and a checkpoint that
    builds Data Docs into ``docs_dir``. Returns the checkpoint; run it with the dataframe."""
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.add_data_docs_site(site_name="crossfuse", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(Path(docs_dir).resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    batch = (ctx.data_sources.add_pandas("manifest").add_dataframe_asset("manifest")
             .add_batch_definition_whole_dataframe("all"))
    suite = ctx.suites.add(expectation_suite(cfg, modalities, labelled))
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name="manifest", data=batch, suite=suite))
    return ctx.checkpoints.add(gx.Checkpoint(
        name="crossfuse-validate", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["crossfuse"])],
        result_format={"result_format": "COMPLETE"}))


def gx_frame(frame: pd.DataFrame, lines: list[int], row_checks: list[RowIssue]) -> pd.DataFrame:
    """The manifest as GX sees it: empty cells as nulls, plus the row-checks column."""
    out = frame.replace({"": None}).reset_index(drop=True)  # an empty cell means missing
    found: dict[int, list[str]] = {}
    for issue in row_checks:
        found.setdefault(issue.line, []).append(f"{issue.column}: {issue.reason}")
    out[ROW_CHECKS_COLUMN] = ["; ".join(found[line]) if line in found else None for line in lines]
    return out


def parse_results(result, frame: pd.DataFrame, lines: list[int]
                  ) -> tuple[list[RowIssue], list[str], list[dict]]:
    """(row issues, table-level failures, one summary per expectation) of a checkpoint result."""
    issues: list[RowIssue] = []
    table_failures: list[str] = []
    summaries: list[dict] = []
    for run in result.run_results.values():
        for r in run.results:
            kind = r.expectation_config.type
            column = r.expectation_config.kwargs.get("column", "")
            summaries.append({"expectation": kind, "column": column, "success": bool(r.success),
                              "unexpected_count": r.result.get("unexpected_count", 0)})
            if r.success or kind == "expect_column_unique_value_count_to_be_between" or \
                    column == ROW_CHECKS_COLUMN:
                continue  # said in words by check_class_sizes / already issues
            rows = r.result.get("unexpected_index_list")
            if rows is None:
                table_failures.append(f"{kind} on {column!r}: observed "
                                      f"{r.result.get('observed_value')}")
                continue
            reason = f"missing {column}" if kind == "expect_column_values_to_not_be_null" \
                else _REASONS.get(kind, kind)
            for idx in rows:
                idx = int(idx["index"]) if isinstance(idx, dict) else int(idx)
                issues.append(RowIssue(lines[idx], str(frame.iloc[idx]["id"]), column, reason))
    return issues, table_failures, summaries


def run_gx_suite(cfg: RunConfig, frame: pd.DataFrame, lines: list[int], docs_dir: Path,
                 row_checks: list[RowIssue] = (), labelled: bool = True
                 ) -> tuple[list[RowIssue], list[str], list[dict]]:
    """Run the GX checkpoint on ``frame`` and build Data Docs into ``docs_dir``.

    ``lines[i]`` is row i's manifest line. ``row_checks`` (issues found in Python:
    media, encoding) are shown in Data Docs too, under ``crossfuse_row_checks``, but
    not returned again; ``labelled=False``: data to score (:func:`expectation_suite`).
    Returns (row issues, table-level failures, one summary dict per
    expectation). The one-class check is reported by
    :func:`crossfuse.data.validation.checks.check_class_sizes` in words; GX keeps it in Data Docs.
    """
    table = gx_frame(frame, lines, list(row_checks))
    checkpoint = gx_checkpoint(cfg, [m for m in cfg.modalities if m in table.columns], docs_dir,
                               labelled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = checkpoint.run(batch_parameters={"dataframe": table})
    return parse_results(result, frame, lines)
