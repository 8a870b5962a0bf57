"""One self-contained HTML report of an evaluation folder (plots embedded as base64 PNG).

It opens in the MLflow UI's artifact viewer (``evaluation/report.html``) and is the
KFP evaluate component's ``Output[HTML]``. Sections appear when their files exist:
headline metrics, per-class report, confusion matrix, calibration, missing-modality
matrix, noise robustness, modality importance, efficiency, extra targets, and — once
the register stage has run — the promotion decision with the numbers it compared.

Example
-------
>>> render_report(Path("eval"), {"dataset": "sample", "fusion": "concat"})   # doctest: +SKIP
PosixPath('eval/report.html')
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from crossfuse.atomic import write_json, write_text

REPORT_FILE = "report.html"
CONTEXT_FILE = "report_context.json"
DATA_WARNINGS_FILE = "data_warnings.json"
HEADLINE = ["test_accuracy", "test_macro_f1", "test_micro_f1", "test_auroc_ovr", "test_auprc_ovr",
            "test_log_loss", "test_log_loss_calibrated", "test_ece", "test_ece_calibrated",
            "fusion_gain_macro_f1", "test_samples"]

HEADLINE_PREFIXES = ("baseline_", "present_", "robustness_", "importance_", "efficiency_")


def is_headline(metric: str) -> bool:
    """Metrics shown in KFP's Metrics panel: all but per-class and extra-target details.

    >>> is_headline("test_macro_f1"), is_headline("test_precision_circle-day")
    (True, False)
    """
    return metric in HEADLINE or metric.startswith(HEADLINE_PREFIXES)


_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px;
       color: #1f2328; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 17px; border-bottom: 1px solid #d0d7de; padding-top: 8px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f8fa; } img { max-width: 100%; border: 1px solid #eee; margin: 4px 0; }
.promoted { color: #1a7f37; font-weight: 600; } .rejected { color: #cf222e; font-weight: 600; }
.note { color: #57606a; font-size: 13px; }
"""


COUNT_SUFFIXES = ("support", "samples", "parameters", "encoded", "hits", "rows", "epoch", "epochs_run")


def _fmt(value, name: str = "") -> str:
    """A cell: counts as whole numbers, scores with four decimals.

    >>> _fmt(149.0, "test_samples"), _fmt(91.0, "support"), _fmt(0.81234, "test_macro_f1")
    ('149', '91', '0.8123')
    >>> _fmt(1.0, "test_macro_f1"), _fmt(12345.6, "latency")
    ('1.0000', '12,346')
    """
    if isinstance(value, float):
        if value.is_integer() and str(name).endswith(COUNT_SUFFIXES):
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return ""
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''), r.get('metric', c))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _csv_rows(path: Path) -> list[dict]:
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


def _decision_section(decision: dict) -> str:
    verdict = decision.get("decision", "")
    css = "promoted" if verdict == "promoted" else "rejected"
    parts = [f"<p><span class='{css}'>{html.escape(verdict)}</span> — "
             f"{html.escape(decision.get('reason', ''))}</p>",
             f"<p class='note'>model {html.escape(str(decision.get('model_name', '')))} "
             f"v{html.escape(str(decision.get('version', '')))}; champion is now "
             f"v{html.escape(str(decision.get('champion_version', '')))}</p>"]
    parts.append(_table(decision.get("checks", []),
                        ["check", "challenger", "champion", "limit", "passed", "detail"]))
    return "".join(parts)


_SHIPPED = {"bagged": "as the average of its fold models",
            "refit": "refitted on all train+val rows"}


def render_report(eval_dir: Path, context: dict[str, str], decision: dict | None = None,
                  out: Path | None = None) -> Path:
    """Write the report of the files the evaluate stage wrote to ``eval_dir``.

    Parameters
    ----------
    eval_dir: the evaluation folder (``metrics.json`` at least).
    context: title facts shown at the top (dataset, fusion method, run id, data version...),
        added to those of an earlier rendering (kept in ``eval_dir/report_context.json``).
    decision: the register stage's gate result (``registration.json``), if it ran.
    out: where to write; default ``eval_dir/report.html`` (which also saves the context).
    """
    eval_dir = Path(eval_dir)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    saved = eval_dir / CONTEXT_FILE
    context = {**(json.loads(saved.read_text()) if saved.is_file() else {}), **context}
    if out is None:
        write_json(saved, context)
    sections = [f"<h1>crossfuse evaluation — {html.escape(context.get('dataset', ''))}</h1>",
                _table([{"": k, "value": v} for k, v in context.items()])]
    if decision:
        sections += ["<h2>Promotion</h2>", _decision_section(decision)]
    warnings_file = eval_dir / DATA_WARNINGS_FILE
    data_warnings = json.loads(warnings_file.read_text()) if warnings_file.is_file() else []
    if data_warnings:
        sections += ["<h2>Data warnings</h2>",
                     "<p class='note'>Validation passed with these findings "
                     "(validation/report.json); the model was trained on this data.</p>",
                     "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in data_warnings)
                     + "</ul>"]

    choice_file = eval_dir / "model_choice.json"
    if choice_file.is_file():
        choice = json.loads(choice_file.read_text())
        how = "a single stratified holdout" if choice["holdout"] else f"{choice['folds']}-fold " \
            "stratified cross-validation"
        sections += ["<h2>Model choice (fusion.method: auto)</h2>",
                     f"<p><b>{html.escape(choice['verdict'])}</b></p>",
                     f"<p class='note'>Every candidate scored by {how} over the "
                     f"{choice['rows']} train+val rows (mean ± std of the folds' macro-F1); the "
                     f"winner ships {_SHIPPED[choice.get('shipped', 'bagged')]}.</p>",
                     _table(_csv_rows(eval_dir / "model_choice.csv"))]

    headline = [{"metric": k, "value": metrics[k]} for k in HEADLINE if k in metrics]
    headline += [{"metric": k, "value": v} for k, v in sorted(metrics.items())
                 if k.startswith("baseline_")]
    sections += ["<h2>Test metrics</h2>", _table(headline),
                 _image(eval_dir / "confusion_matrix.png", "confusion matrix")]

    report_file = eval_dir / "classification_report.json"
    if report_file.is_file():
        report = json.loads(report_file.read_text())
        per_class = [{"class": name, **{k: v for k, v in stats.items()}}
                     for name, stats in report.items() if isinstance(stats, dict)]
        sections += ["<h2>Per class</h2>",
                     _table(per_class, ["class", "precision", "recall", "f1-score", "support"])]

    sections += ["<h2>Calibration</h2>",
                 "<p class='note'>Temperature scaling fitted on the validation split; the served "
                 "model returns the calibrated probabilities.</p>",
                 _table([{"": "before", "ECE": metrics.get("test_ece", ""),
                          "log loss": metrics.get("test_log_loss", "")},
                         {"": "after", "ECE": metrics.get("test_ece_calibrated", ""),
                          "log loss": metrics.get("test_log_loss_calibrated", "")}]),
                 _image(eval_dir / "reliability_diagram.png", "reliability diagram")]

    for title, stem, note in (
            ("Missing modalities", "modality_subsets",
             "The model trained once, scored with only these modalities present."),
            ("Noise robustness", "robustness",
             "Macro-F1 as one modality gets noisier (0 = clean, 1 = maximum); AUC = area under "
             "the curve."),
            ("Modality importance", "importance",
             "Macro-F1 lost when the modality is dropped (marked missing) or shuffled across "
             "test rows.")):
        rows = _csv_rows(eval_dir / f"{stem}.csv")
        if stem == "robustness" and rows:
            rows = [{"curve": k, "AUC": v} for k, v in sorted(metrics.items())
                    if k.startswith("robustness_")]
        if rows:
            sections += [f"<h2>{title}</h2>", f"<p class='note'>{note}</p>", _table(rows),
                         _image(eval_dir / f"{stem}.png", title)]

    efficiency = {k: v for k, v in metrics.items() if k.startswith("efficiency_")}
    if efficiency:
        sections += ["<h2>Efficiency</h2>",
                     _table([{"measure": k[len("efficiency_"):], "value": v}
                             for k, v in sorted(efficiency.items())])]

    for path in sorted(eval_dir.glob("confusion_matrix_*.png")):
        sections += [f"<h2>Target {html.escape(path.stem[len('confusion_matrix_'):])}</h2>",
                     _image(path, path.stem)]

    extra = sorted({k for k in metrics if k.startswith("test_") and k not in HEADLINE
                    and not k.startswith(("test_precision_", "test_recall_", "test_f1_"))})
    if extra:
        sections += ["<h2>Other test metrics</h2>",
                     _table([{"metric": k, "value": metrics[k]} for k in extra])]

    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>crossfuse report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>")
    out = Path(out) if out is not None else eval_dir / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    return out
