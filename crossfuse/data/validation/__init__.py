"""Stage 1, validate: row-level checks, the Great Expectations suite, the report and rejects.

- :mod:`.report`: :class:`RowIssue`, :class:`ValidationReport`, :func:`require_valid`;
- :mod:`.checks`: media, text encoding, empty rows, class sizes (plain Python);
- :mod:`.integrity`: ragged rows, split values, label case, duplicated content, split coverage;
- :mod:`.gx_suite`: the GX suite, checkpoint and Data Docs;
- :mod:`.validate`: :func:`validate`, which runs them all on a dataset.

>>> from crossfuse.data.validation import validate, require_valid   # doctest: +SKIP
"""

from crossfuse.data.validation.report import (
    RowIssue,
    ValidationFailed,
    ValidationReport,
    require_valid,
    validation_tags,
    warnings_from_tags,
)
from crossfuse.data.validation.validate import validate

__all__ = ["RowIssue", "ValidationFailed", "ValidationReport", "require_valid", "validate",
           "validation_tags", "warnings_from_tags"]
