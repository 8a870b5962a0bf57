"""One self-contained HTML report of an evaluation folder (plots embedded as base64 PNG).

It opens in the MLflow UI's artifact viewer (``evaluation/report.html``) and is the
KFP evaluate component's ``Output[HTML]``. It leads with the answer: the promotion
decision (once the register stage has run), the model beside each single modality with
the fusion gain in words (red when fusion lost), the headline metrics. Then the sections
whose files exist: promotion checks, data warnings, model choice, per class and confusion
matrix, misclassified examples, training curves, calibration, missing modalities, noise
robustness, modality importance, efficiency, extra targets; the run's facts last.
The page is the jinja2 template ``templates/report.html.j2``; every value is escaped.

Example
-------
>>> render_report(Path("eval"), {"dataset": "sample", "fusion": "concat"})   # doctest: +SKIP
PosixPath('eval/report.html')
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from crossfuse.atomic import write_json, write_text
from crossfuse.evaluation.examples import CURVES_FILE, MISCLASSIFIED_FILE
from crossfuse.evaluation.labels import metric_label
from crossfuse.registry.serving_profile import profile_metrics
from crossfuse.training.selection import CHOICE_RULE

REPORT_FILE = "report.html"
CONTEXT_FILE = "report_context.json"
DATA_WARNINGS_FILE = "data_warnings.json"
DATA_FILE = "data.json"
FUSED_VS_SINGLE_FILE = "fused_vs_single.png"
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


COUNT_SUFFIXES = ("support", "samples", "parameters", "encoded", "hits", "rows", "epoch", "epochs_run")


def _fmt(value, name: str = "") -> str:
    """A cell: counts as whole numbers, scores with four decimals.

    >>> _fmt(149.0, "test_samples"), _fmt(91.0, "support"), _fmt(0.81234, "test_macro_f1")
    ('149', '91', '0.8123')
    >>> _fmt(1.0, "test_macro_f1"), _fmt(12345.6, "latency"), _fmt(None, "champion")
    ('1.0000', '12,346', '—')
    """
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        if value.is_integer() and str(name).endswith(COUNT_SUFFIXES):
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)  # the template escapes it


def _image_tag(path: Path | None, alt: str = "") -> Markup:
    """An ``<img>`` with the PNG inlined, or nothing when the file does not exist."""
    if path is None or not Path(path).is_file():
        return Markup("")
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return Markup('<img alt="{}" src="data:image/png;base64,{}">').format(alt, data)


@lru_cache(maxsize=1)
def _template():
    environment = Environment(loader=PackageLoader("crossfuse.evaluation", "templates"),
                              autoescape=select_autoescape(default=True), undefined=StrictUndefined)
    environment.filters["cell"] = _fmt
    environment.filters["img"] = _image_tag
    return environment.get_template("report.html.j2")


def _table(rows: list[dict], columns: list[str] | None = None) -> dict:
    return {"columns": columns or (list(rows[0]) if rows else []), "rows": rows}


def _csv_rows(path: Path) -> list[dict]:
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def interval_text(metrics: dict[str, float], name: str) -> str:
    """``0.7600 to 0.8600`` for metric ``name``'s bootstrap interval (a gain signed), or "".

    >>> interval_text({"fusion_gain_macro_f1_ci_low": -0.01, "fusion_gain_macro_f1_ci_high": 0.05},
    ...               "fusion_gain_macro_f1")
    '-0.0100 to +0.0500'
    """
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if low is None or high is None:
        return ""
    fmt = "+.4f" if name.startswith("fusion_gain") else ".4f"
    return f"{low:{fmt}} to {high:{fmt}}"


def ci_words(metrics: dict[str, float], name: str) -> str:
    """`` (95% CI 0.7600 to 0.8600)`` for metric ``name``'s bootstrap interval, or ""."""
    text = interval_text(metrics, name)
    return f" (95% CI {text})" if text else ""


def gain_is_uncertain(metrics: dict[str, float]) -> bool:
    """The fusion gain's interval includes 0: these test rows cannot tell it from no gain."""
    low, high = metrics.get("fusion_gain_macro_f1_ci_low"), metrics.get("fusion_gain_macro_f1_ci_high")
    return low is not None and high is not None and low <= 0 <= high


def headline(metrics: dict[str, float]) -> str:
    """One line: test macro-F1 beside the best single modality's, and the gain in words,
    each with its 95% bootstrap interval when the metrics hold one.

    >>> headline({"test_macro_f1": 0.8, "baseline_text_test_macro_f1": 0.85,
    ...           "baseline_image_test_macro_f1": 0.6, "fusion_gain_macro_f1": -0.05})
    'test macro-F1 0.8000; best single modality text 0.8500: fusion LOST 0.0500 to it'
    >>> headline({"test_macro_f1": 0.8, "test_macro_f1_ci_low": 0.7, "test_macro_f1_ci_high": 0.9,
    ...           "baseline_text_test_macro_f1": 0.79, "fusion_gain_macro_f1": 0.01,
    ...           "fusion_gain_macro_f1_ci_low": -0.03, "fusion_gain_macro_f1_ci_high": 0.05})
    ... # doctest: +NORMALIZE_WHITESPACE
    'test macro-F1 0.8000 (95% CI 0.7000 to 0.9000); best single modality text 0.7900: fusion
    gained +0.0100 (95% CI -0.0300 to +0.0500), an interval that includes 0'
    """
    line = f"test macro-F1 {metrics['test_macro_f1']:.4f}{ci_words(metrics, 'test_macro_f1')}"
    found = best_single_modality(metrics)
    if found:
        best, score, gain = found
        verdict = f"fusion gained {gain:+.4f}" if gain >= 0 else f"fusion LOST {-gain:.4f} to it"
        verdict += ci_words(metrics, "fusion_gain_macro_f1")
        if gain_is_uncertain(metrics):
            verdict += ", an interval that includes 0"
        line += f"; best single modality {best} {score:.4f}: {verdict}"
    return line


def decision_words(decision: dict) -> str:
    """The registration's outcome in one sentence.

    >>> decision_words({"model_name": "m", "version": "2", "promoted": False,
    ...                 "champion_version": "1", "reason": "no gain"})
    'm v2 was not promoted; the champion stays v1 (no gain)'
    """
    model = f"{decision['model_name']} v{decision['version']}"
    if decision.get("promoted"):
        return f"{model} was promoted to champion ({decision.get('reason', '')})"
    champion = decision.get("champion_version")
    stays = f"the champion stays v{champion}" if champion else "there is no champion yet"
    return f"{model} was not promoted; {stays} ({decision.get('reason', '')})"


def run_description(metrics: dict[str, float], decision: dict, verdict: str = "") -> str:
    """What the MLflow run and model version show first (Markdown): the decision and why,
    the headline metric with its interval, how the model was chosen, where the report is."""
    lines = [f"**{decision_words(decision)}**", "", headline(metrics) + "."]
    if verdict:
        lines += ["", f"Model choice: {verdict}."]
    lines += ["", "The whole evaluation: artifact `evaluation/report.html` of this run."]
    return "\n".join(lines)


def single_modality_scores(metrics: dict[str, float]) -> dict[str, float]:
    """``{modality: test macro-F1}`` of the single-modality baselines in ``metrics``."""
    return {k[len("baseline_"):-len("_test_macro_f1")]: v for k, v in metrics.items()
            if k.startswith("baseline_") and k.endswith("_test_macro_f1")}


def best_single_modality(metrics: dict[str, float]) -> tuple[str, float, float] | None:
    """(modality, its test macro-F1, the fusion gain over it), or None without baselines.

    >>> best_single_modality({"baseline_text_test_macro_f1": 0.7,
    ...                       "baseline_image_test_macro_f1": 0.5, "fusion_gain_macro_f1": 0.1})
    ('text', 0.7, 0.1)
    """
    singles = single_modality_scores(metrics)
    gain = metrics.get("fusion_gain_macro_f1")
    if gain is None or not singles:
        return None
    best = max(singles, key=singles.get)
    return best, singles[best], gain


def _decision(decision: dict | None) -> dict:
    if not decision:
        return {"css": "neutral", "reason": "",
                "headline": "Evaluated; not registered yet (the register stage adds its "
                            "promotion decision here)."}
    model = f"{decision.get('model_name', '')} v{decision.get('version', '')}"
    champion = decision.get("champion_version") or "none"
    if decision.get("decision") == "promoted":
        return {"css": "good", "reason": decision.get("reason", ""),
                "headline": f"Promoted: {model} is the champion."}
    return {"css": "bad", "reason": decision.get("reason", ""),
            "headline": f"Not promoted: {model} is the challenger; the champion stays "
                        f"{'v' + champion if champion != 'none' else 'unset'}."}


def _gain(metrics: dict[str, float]) -> dict | None:
    found = best_single_modality(metrics)
    if found is None:
        return None
    best, score, gain = found
    if gain > 0:
        words = f"fusion gained {gain:+.4f}"
    elif gain == 0:
        words = "fusion scored exactly the same"
    else:
        words = f"fusion LOST {-gain:.4f} to it"
    words += ci_words(metrics, "fusion_gain_macro_f1")
    rows = int(metrics.get("test_samples", 0))
    doubt = (f" That interval includes 0: on these {rows} test rows the gain cannot be told "
             f"from none." if gain_is_uncertain(metrics) else "")
    return {"css": "good" if gain > 0 and not doubt else "bad" if gain < 0 else "neutral",
            "sentence": f"Test macro-F1 {metrics['test_macro_f1']:.4f}"
                        f"{ci_words(metrics, 'test_macro_f1')}; {best} alone {score:.4f}: "
                        f"{words}.{doubt}"}


def metric_rows(metrics: dict[str, float], names: list[str]) -> list[dict]:
    """Table rows of ``names`` (those present): the measure in words, its value (with its
    interval when there is one) and the MLflow metric's name."""
    rows = []
    for name in names:
        if name not in metrics:
            continue
        rows.append({"measure": metric_label(name), "value": metrics[name], "MLflow metric": name})
        if interval := interval_text(metrics, name):
            rows.append({"measure": metric_label(f"{name}_ci"), "value": interval,
                         "MLflow metric": f"{name}_ci_low / _ci_high"})
    return rows


def data_rows(data: dict) -> tuple[str, list[dict]]:
    """The data section's sentence and its class-balance table (``data.json``).

    >>> data_rows({"intake": {"rows_in": 10, "rows_used": 9, "rows_rejected": 1},
    ...            "splits": {"train": 6, "test": 3}, "classes": [{"class": "a", "train": 6,
    ...            "test": 3}]})[0]  # doctest: +NORMALIZE_WHITESPACE
    '10 rows in = 9 used + 1 rejected (every rejected row and its reason: validation/rejects.csv).
    Split: train 6, test 3.'
    """
    intake, splits = data.get("intake", {}), data.get("splits", {})
    sentence = ""
    if intake:
        sentence = (f"{intake['rows_in']} rows in = {intake['rows_used']} used + "
                    f"{intake['rows_rejected']} rejected (every rejected row and its reason: "
                    f"validation/rejects.csv). ")
    sentence += "Split: " + ", ".join(f"{s} {n}" for s, n in splits.items()) + "."
    rows = [{**c, "all": sum(c.get(s, 0) for s in splits)} for c in data.get("classes", [])]
    return sentence, rows


_SHIPPED = {"bagged": "as the average of its fold models",
            "refit": "refitted on all train+val rows"}

_CURVE_SECTIONS = (
    ("Missing modalities", "modality_subsets",
     "This model, scored with only these modalities present (the rest masked as missing): "
     "not the single-modality baselines above, which were each trained on one modality alone."),
    ("Noise robustness", "robustness",
     "Macro-F1 as one modality gets noisier (0 = clean, 1 = maximum); AUC = area under the curve."),
    ("Modality importance", "importance",
     "Macro-F1 lost when the modality is dropped (marked missing) or shuffled across test rows."),
)

_CONTEXT_LABELS = {"git.commit": "code version (crossfuse's git commit, else its package version)",
                   "data.dvc_md5": "data version (DVC md5)", "run_id": "MLflow run"}


def calibration_note(metrics: dict[str, float], choice: dict | None) -> str:
    """What the temperature is and which rows it was fitted on, in one sentence.

    >>> print(calibration_note({"calibration_temperature": 1.5, "calibration_rows": 60}, {"rows": 9}))
    ... # doctest: +NORMALIZE_WHITESPACE
    Temperature scaling: T = 1.50, fitted on 60 rows the shipped model never trained on (a
    calibration slice held out of every fit); the served model returns the calibrated probabilities.
    """
    temperature, rows = metrics.get("calibration_temperature"), metrics.get("calibration_rows")
    if temperature is None:
        return "Temperature scaling; the served model returns the calibrated probabilities."
    where = ("a calibration slice held out of every fit" if choice else
             "the validation split, which it early-stopped on")
    fitted = (f"fitted on {int(rows)} rows the shipped model never trained on ({where})" if rows
              else "no held-out rows to fit it on, so it is left at 1")
    return (f"Temperature scaling: T = {temperature:.2f}, {fitted}; the served model returns the "
            f"calibrated probabilities.")


_CHOICE_COLUMNS = {"rank": "rank", "candidate": "candidate", "modalities": "modalities",
                   "cv_macro_f1_mean": "CV macro-F1", "cv_macro_f1_std": "± (folds' std)",
                   "fit_seconds": "fit seconds", "epochs": "epochs",
                   "settings_tried": "settings tried", "searched": "chosen settings",
                   "members": "ensemble weights"}


def choice_table(rows: list[dict]) -> dict:
    """The ranked candidates with headers in words and settings rounded to 3 digits."""
    columns = [c for c in _CHOICE_COLUMNS if any(c in r and r[c] == r[c] for r in rows)]
    shown = [{_CHOICE_COLUMNS[c]: _choice_cell(c, r.get(c)) for c in columns} for r in rows]
    return _table(shown, [_CHOICE_COLUMNS[c] for c in columns])


def _choice_cell(column: str, value):
    """A model-choice cell: whole numbers as such, seconds to 0.1, settings in words."""
    if column == "searched":
        return settings_words(value)
    if not isinstance(value, float) or value != value:
        return value
    if column in ("rank", "epochs", "settings_tried"):
        return int(value)
    return f"{value:.1f}" if column == "fit_seconds" else value


def settings_words(value) -> str:
    """A candidate's searched settings (a dict, or its text in a CSV) as ``key=value`` pairs,
    numbers to 3 significant digits.

    >>> settings_words("{'lr': 0.0012345678, 'dropout': 0.25, 'hidden_dim': 128}")
    'lr=0.00123, dropout=0.25, hidden_dim=128'
    """
    import ast

    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if not isinstance(value, dict):
        return "" if value is None or value != value else str(value)
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in value.items())


def _section(title: str, note: str = "", tables: list[dict] | None = None,
             images: list[Path] | None = None, **more) -> dict:
    return {"title": title, "note": note, "tables": tables or [], "verdict": "", "bullets": [],
            "examples": [], **more, "images": [{"data": p} for p in images or [] if p.is_file()]}


def report_sections(eval_dir: Path, metrics: dict[str, float], decision: dict | None) -> list[dict]:
    """The report's sections below the answer, in reading order; a section whose files are
    absent is left out."""
    sections = []
    data = _read_json(eval_dir / DATA_FILE, None)
    if data:
        sentence, rows = data_rows(data)
        sections.append(_section("Data", sentence + " Rows per class and split:",
                                 [_table(rows, ["class", *data["splits"], "all"])]))
    if decision:
        sections.append(_section(
            "Promotion", f"model {decision.get('model_name', '')} v{decision.get('version', '')};"
            f" champion is now v{decision.get('champion_version', '')}",
            [_table(decision.get("checks", []),
                    ["check", "challenger", "champion", "limit", "passed", "detail"])],
            verdict=decision.get("reason", "")))
    data_warnings = _read_json(eval_dir / DATA_WARNINGS_FILE, [])
    if data_warnings:
        sections.append(_section("Data warnings", "Validation passed with these findings "
                                 "(validation/report.json); the model was trained on this data.",
                                 bullets=data_warnings))
    choice = _read_json(eval_dir / "model_choice.json", None)
    if choice:
        how = "a single stratified holdout" if choice["holdout"] else \
            f"{choice['folds']}-fold stratified cross-validation"
        sections.append(_section(
            "Model choice (fusion.method: auto)",
            f"Every candidate scored by {how} over {choice['rows']} train+val rows (mean ± "
            f"std of the folds' macro-F1), each fold model trained with the settings and "
            f"epochs tuned on fold 0, which is never scored; the winner ships "
            f"{_SHIPPED[choice.get('shipped', 'bagged')]}. "
            + CHOICE_RULE + " "
            + (f"Selection optimism (the winner's CV macro-F1 minus its test macro-F1): "
               f"{choice['optimism']:+.4f}." if "optimism" in choice else ""),
            [choice_table(_csv_rows(eval_dir / "model_choice.csv"))], verdict=choice["verdict"]))
    report = _read_json(eval_dir / "classification_report.json", {})
    per_class = [{"class": name, **stats} for name, stats in report.items() if isinstance(stats, dict)]
    if per_class:
        sections.append(_section("Per class", "", [_table(
            per_class, ["class", "precision", "recall", "f1-score", "support"])],
            [eval_dir / "confusion_matrix.png"]))
    wrong = _read_json(eval_dir / MISCLASSIFIED_FILE, None)
    if wrong is not None:
        total = int(metrics.get("test_samples", 0))
        sections.append(_section(
            "Misclassified examples", f"The most confident of the wrong test predictions "
            f"(calibrated confidence){f', out of {total} test rows' if total else ''}."
            if wrong else "No test row was misclassified.", examples=wrong))
    if (eval_dir / CURVES_FILE).is_file():
        sections.append(_section("Training curves", "Per epoch on the train and validation "
                                 "splits; the dotted line is the epoch whose weights were kept.",
                                 images=[eval_dir / CURVES_FILE]))
    sections.append(_section(
        "Calibration", calibration_note(metrics, choice),
        [_table([{"": "before", "ECE": metrics.get("test_ece", ""),
                  "log loss": metrics.get("test_log_loss", "")},
                 {"": "after", "ECE": metrics.get("test_ece_calibrated", ""),
                  "log loss": metrics.get("test_log_loss_calibrated", "")}])],
        [eval_dir / "reliability_diagram.png"]))
    for title, stem, note in _CURVE_SECTIONS:
        rows = _csv_rows(eval_dir / f"{stem}.csv")
        if stem == "robustness" and rows:
            rows = [{"curve": k, "AUC": v} for k, v in sorted(metrics.items())
                    if k.startswith("robustness_")]
        if rows:
            sections.append(_section(title, note, [_table(rows)], [eval_dir / f"{stem}.png"]))
    served = (decision or {}).get("serving") or {}
    metrics = {**metrics, **profile_metrics(served)}
    efficiency = metric_rows(metrics, sorted(k for k in metrics if k.startswith("efficiency_")))
    if efficiency:
        note = (("The served model, profiled on promotion in a fresh process on "
                 f"{served['samples']} raw test requests"
                 + (" (the profile of these same model files, kept from an earlier run)"
                    if served.get("from_cache") else "") + ".") if served else
                "The served model's load time, raw-input latency and peak memory are profiled "
                "when the register stage promotes it.")
        sections.append(_section("Efficiency", note, [_table(efficiency)]))
    for path in sorted(eval_dir.glob("confusion_matrix_*.png")):
        sections.append(_section(f"Target {path.stem[len('confusion_matrix_'):]}", images=[path]))
    extra = sorted({k for k in metrics if k.startswith("test_") and k not in HEADLINE
                    and not k.startswith(("test_precision_", "test_recall_", "test_f1_"))})
    if extra:
        sections.append(_section("Other test metrics", "", [_table(metric_rows(metrics, extra))]))
    return sections


def render_report(eval_dir: Path, context: dict[str, str], decision: dict | None = None,
                  out: Path | None = None) -> Path:
    """Write the report of the files the evaluate stage wrote to ``eval_dir``.

    It opens with the answer — the promotion decision, the model beside the best single
    modality (the gain in words, red when fusion lost) and the headline metrics — then
    the sections of :func:`report_sections`, then the run's facts.

    Parameters
    ----------
    eval_dir: the evaluation folder (``metrics.json`` at least).
    context: facts about the run (dataset, fusion method, run id, data version...), added
        to those of an earlier rendering (kept in ``eval_dir/report_context.json``).
    decision: the register stage's gate result (``registration.json``), if it ran.
    out: where to write; default ``eval_dir/report.html`` (which also saves the context).
    """
    eval_dir = Path(eval_dir)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    saved = eval_dir / CONTEXT_FILE
    context = {**_read_json(saved, {}), **context}
    if out is None:
        write_json(saved, context)
    headline_rows = metric_rows(metrics, HEADLINE + sorted(k for k in metrics
                                                          if k.startswith("baseline_")))
    subtitle = " · ".join(f"{k} {context[k]}" for k in ("fusion", "modalities", "model")
                          if context.get(k))
    page = _template().render(
        dataset=context.get("dataset", ""), subtitle=subtitle, decision=_decision(decision),
        gain=_gain(metrics), images={"fused_vs_single": eval_dir / FUSED_VS_SINGLE_FILE},
        headline=_table(headline_rows), sections=report_sections(eval_dir, metrics, decision),
        run=_table([{"": _CONTEXT_LABELS.get(k, k), "value": v} for k, v in context.items()]))
    out = Path(out) if out is not None else eval_dir / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    return out
