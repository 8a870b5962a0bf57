"""The batch's HTML page: the drift verdict first, then each drift figure beside its threshold,
the row counts, and the labelled rows' metrics when the batch has labels.

Example
-------
>>> page = render_batch_report(Path("out/report.html"), summary)   # doctest: +SKIP
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from crossfuse.atomic import write_text
from crossfuse.config import DriftConfig
from crossfuse.evaluation.labels import metric_label
from crossfuse.monitoring.drift import DriftReport

BATCH_REPORT_FILE = "report.html"
PREDICTIONS_CHART = "predictions.png"


@dataclass
class BatchSummary:
    """What one batch did: the data, the model, the row counts, the drift report (None when it
    could not be computed, with ``drift_note`` saying why) and the labelled rows' metrics."""

    dataset: str
    model: str
    rows_in: int
    rows_scored: int
    rows_rejected: int
    drift: DriftReport | None
    thresholds: DriftConfig
    metrics: dict[str, float] = field(default_factory=dict)
    drift_note: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    rows_in_training: int | None = 0  # None: not known (the model kept no training rows)
    labelled_in_training: int = 0  # labelled rows left out of the metrics
    chart: Path | None = None  # predicted classes and confidence (PNG)
    least_confident: list[dict] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        return self.drift.flagged if self.drift else []


def _verdict(drifted: bool) -> str:
    return "DRIFT" if drifted else "ok"


def drift_tables(drift: DriftReport, limits: DriftConfig) -> list[dict]:
    """The embedding, label and missing-modality figures as tables, each beside its threshold."""
    m = drift.metrics
    embedding = [[mod, f"{m[f'drift_{mod}_mmd2']:.4f}", f"{m[f'drift_{mod}_p_value']:.4f}",
                  f"< {limits.max_p_value}", _verdict(m[f"drift_{mod}_p_value"] < limits.max_p_value)]
                 for mod in drift.missing if f"drift_{mod}_p_value" in m]
    shift = drift.label_shift
    labels = [[c, f"{shift['reference'][c]:.3f}", f"{shift['current'][c]:.3f}"]
              for c in shift["reference"]]
    missing = [[mod, f"{r['reference']:.1%}", f"{r['current']:.1%}", f"{r['change']:+.1%}",
                f"> +{limits.max_missing_change:.0%}", _verdict(r["change"] > limits.max_missing_change)]
               for mod, r in drift.missing.items()]
    return [
        {"title": "Embedding drift (MMD two-sample test)",
         "note": "Each modality's pooled embeddings against the model's training rows "
                 f"(up to {limits.max_samples} rows a side, {limits.permutations} permutations). "
                 "A p-value under the threshold says the two samples differ.",
         "columns": ["modality", "MMD²", "p-value", "drift when", "verdict"], "rows": embedding},
        {"title": "Predicted labels against the training labels",
         "note": f"Total variation {shift['total_variation']:.3f} (drift when > "
                 f"{limits.max_label_shift}): "
                 f"{_verdict(shift['total_variation'] > limits.max_label_shift)}.",
         "columns": ["class", "training share", "predicted share"], "rows": labels},
        {"title": "Missing modalities", "note": "",
         "columns": ["modality", "training", "this batch", "change", "drift when", "verdict"],
         "rows": missing},
    ]


def metric_table(metrics: dict[str, float], rows_in_training: int | None = 0,
                 labelled_in_training: int = 0) -> dict:
    """The headline metrics of the labelled rows the model never trained on (the evaluate
    stage's, computed the same way)."""
    names = ["accuracy", "macro_f1", "micro_f1", "auroc_ovr", "log_loss", "ece_calibrated",
             "samples"]
    rows = [[metric_label(f"test_{n}").replace("test rows", "rows"),
             f"{metrics[f'labelled_{n}']:.4f}" if n != "samples"
             else str(int(metrics[f"labelled_{n}"]))] for n in names if f"labelled_{n}" in metrics]
    note = "Computed as the evaluate stage computes its test metrics"
    if rows_in_training is None:
        note += (", on every labelled row: whether the model trained on some of them is not "
                 "known (it kept no record of its training rows that new rows can be matched "
                 "with).")
    elif labelled_in_training:
        note += (f", on the labelled rows the model never trained on: {labelled_in_training} "
                 f"labelled rows are in its training data (same content; in_training in the "
                 f"predictions) and are left out, since a score on them is not a test.")
    else:
        note += "; none of these rows is in the model's training data."
    return {"title": "Metrics on the labelled rows the model never saw", "note": note,
            "columns": ["metric", "value"], "rows": rows}


def confidence_table(rows: list[dict]) -> dict:
    """The least confident predictions, for a person to check first."""
    return {"title": "Least confident predictions",
            "note": "The rows whose predicted class has the lowest calibrated probability; "
                    "line = the manifest line.",
            "columns": ["id", "line", "predicted", "confidence"],
            "rows": [[r["id"], str(r["line"]), r["predicted"], f"{r['confidence']:.1%}"]
                     for r in rows]}


def report_data(s: BatchSummary) -> dict:
    """The template's values for one batch."""
    if s.drift is None:
        headline = f"Drift not checked: {s.drift_note}"
    elif s.flagged:
        headline = f"Drift: {len(s.flagged)} figure{'s' if len(s.flagged) != 1 else ''} crossed " \
                   f"{'its' if len(s.flagged) == 1 else 'their'} threshold"
    elif s.drift_note:  # labels and missing rates were compared, the embeddings were not
        headline = f"Drift not checked in full: {s.drift_note}; the other figures are within " \
                   f"their thresholds"
    else:
        headline = "No drift: every figure is within its threshold"
    tables = drift_tables(s.drift, s.thresholds) if s.drift else []
    if s.least_confident:
        tables.insert(0, confidence_table(s.least_confident))
    if s.metrics:
        tables.insert(0, metric_table(s.metrics, s.rows_in_training, s.labelled_in_training))
    chart = (base64.b64encode(s.chart.read_bytes()).decode("ascii")
             if s.chart is not None and s.chart.is_file() else "")
    return {"dataset": s.dataset, "model": s.model, "flagged": s.flagged, "headline": headline,
            "chart": chart,
            "rows": f"{s.rows_in} rows in = {s.rows_scored} scored + {s.rows_rejected} rejected "
                    f"(rejected rows and why: validation/rejects.csv)",
            "facts": ", ".join(f"{k} {v}" for k, v in s.facts.items()), "tables": tables}


def render_batch_report(path: Path, summary: BatchSummary) -> Path:
    """Write the page for ``summary`` to ``path`` (every value escaped)."""
    environment = Environment(loader=PackageLoader("crossfuse.batch", "templates"),
                              autoescape=select_autoescape(["html", "j2"]),
                              undefined=StrictUndefined)
    html = environment.get_template("batch_report.html.j2").render(**report_data(summary))
    write_text(Path(path), html)
    return Path(path)
