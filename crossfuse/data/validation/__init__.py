"""Stage 1, validate: row-level checks, the Great Expectations suite, the report and rejects.

>>> from crossfuse.data.validation import validate, require_valid   # doctest: +SKIP
"""

from crossfuse.data.validation.validate import (
    RowIssue,
    ValidationFailed,
    ValidationReport,
    require_valid,
    validate,
)

__all__ = ["RowIssue", "ValidationFailed", "ValidationReport", "require_valid", "validate"]
