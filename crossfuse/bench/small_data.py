"""``crossfuse bench small-data``: ``auto`` against every fixed method and each modality alone,
as the labelled data shrinks.

Protocol, for each fraction of the train+val rows (stratified by class, seeded per seed;
the test split stays whole so every score is on the same rows):

- every fixed fusion method and each unimodal head (``concat`` on one modality), trained
  with the config's settings on the kept rows' train split and early-stopped on their
  val split — what ``--set fusion.method=<name>`` does;
- with ``--finetune top:1,lora:8``: the ``linear`` head with the encoders fine-tuned each
  way (``finetune:<spec>``), trained and calibrated like the fixed methods, beside the
  frozen ``linear`` row;
- ``auto``: the cross-fitted choice among its candidates (:mod:`crossfuse.training.selection`)
  on the kept rows, scored on test twice from the same choice: ``auto`` ships the winner
  bagged (its fold models averaged), ``auto:refit`` the winner refitted on the kept rows
  outside the calibration slice.

Each model is calibrated as the pipeline calibrates it: a fixed method's temperature on
its val split, ``auto``'s on its calibration slice, by the shipped model's predictions.
Each row: fraction, seed, model, test macro-F1, the temperature, test ECE and log loss
before and after it, wall time, and for ``auto`` the winner.

Example
-------
>>> rows = bench_small_data(fs, cfg, fractions=[0.1, 1.0], seeds=[0, 1])   # doctest: +SKIP
>>> print(markdown_table(rows))                                            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from crossfuse.config import RunConfig
from crossfuse.errors import UserError
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FUSION_METHODS
from crossfuse.metrics import SplitScores, predict_split
from crossfuse.training.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from crossfuse.training.crossfit import UNUSED
from crossfuse.training.finetune import FINETUNED, finetune
from crossfuse.training.folds import order_key
from crossfuse.training.loop import fit
from crossfuse.training.selection import (
    AUTO,
    UNIMODAL,
    UNIMODAL_METHOD,
    bagged,
    calibration_scores,
    refit,
    select_model,
)

log = logging.getLogger(__name__)

REFIT = AUTO + ":refit"


def subsample(fs: FeatureSet, fraction: float, seed: int) -> FeatureSet:
    """``fs`` with only ``fraction`` of each class's train+val rows kept (the rest: split ``unused``).

    Within a class, rows are ordered by a hash of ``(seed, id)``; the first ``ceil(fraction * n)``
    stay, keeping each split's share. Test rows are never touched.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"fractions must be in (0, 1], got {fraction}")
    split = fs.index["split"].to_numpy().copy()
    labeled = np.isin(split, ["train", "val"])
    for label in np.unique(fs.index["label_idx"].to_numpy()[labeled]):
        rows = np.flatnonzero(labeled & (fs.index["label_idx"].to_numpy() == label))
        rows = sorted(rows, key=lambda r: order_key(seed, str(fs.index["id"].iat[r])))
        split[rows[math.ceil(fraction * len(rows)):]] = UNUSED
    return dataclasses.replace(fs, index=fs.index.assign(split=split))


def _test_row(model, fs: FeatureSet, calibration: SplitScores) -> dict:
    """Test macro-F1, and ECE and log loss before/after the temperature fitted on ``calibration``
    (rows the model never trained on), exactly as the pipeline calibrates what it ships."""
    test = predict_split(model, fs.split_inputs("test", list(model.spec.dims),
                                                model.spec.token_inputs))
    temperature = fit_temperature(calibration.labels, calibration.probs)
    after = apply_temperature(test.probs, temperature)
    return {"test_macro_f1": test.macro_f1, "temperature": round(temperature, 4),
            "ece_before": expected_calibration_error(test.labels, test.probs),
            "ece_after": expected_calibration_error(test.labels, after),
            "log_loss_before": test.nll,
            "log_loss_after": SplitScores(labels=test.labels, probs=after).nll}


def _auto(fs: FeatureSet, cfg: RunConfig, seed: int) -> list[tuple[str, float, dict]]:
    """``auto`` bagged and refitted from one selection: (model, seconds, row fields)."""
    cfg = cfg.model_copy(update={"seed": seed, "fusion": cfg.fusion.model_copy(update={"method": AUTO})})
    start = time.perf_counter()
    selection = select_model(fs, cfg)
    by_name = {c.name: c for c in selection.ranked}
    model = bagged(selection.winner, by_name)
    bagged_row = _test_row(model, fs, calibration_scores(model, fs, selection.plan))
    chosen = time.perf_counter() - start
    model = refit(selection.winner, by_name, fs, selection.plan, seed)
    refit_row = _test_row(model, fs, calibration_scores(model, fs, selection.plan))
    extra = {"winner": selection.winner.name, "cv_macro_f1": round(selection.winner.mean, 4)}
    return [(AUTO, chosen, {**bagged_row, **extra}),
            (REFIT, time.perf_counter() - start, {**refit_row, **extra})]


def _fixed(fs: FeatureSet, cfg: RunConfig, name: str, seed: int) -> list[tuple[str, float, dict]]:
    start = time.perf_counter()
    unimodal = name.startswith(UNIMODAL)
    modalities = [name[len(UNIMODAL):]] if unimodal else fs.modalities
    fusion = cfg.fusion.model_copy(update={"method": UNIMODAL_METHOD if unimodal else name})
    head, _ = fit(fs, fusion, cfg.train, seed, modalities=modalities)
    val = predict_split(head, fs.split_inputs("val", modalities, head.spec.token_inputs))
    return [(name, time.perf_counter() - start, _test_row(head, fs, val))]


def _finetuned(fs: FeatureSet, cfg: RunConfig, spec: str, seed: int,
               preprocessed: Path) -> list[tuple[str, float, dict]]:
    """The ``linear`` head with the encoders fine-tuned as ``spec`` says
    (:mod:`crossfuse.training.finetune`), calibrated on its val split and scored on test with
    its own encoders' vectors; the frozen ``linear`` row is its comparison."""
    start = time.perf_counter()
    tuned_cfg = cfg.model_copy(update={"seed": seed, "fusion": cfg.fusion.model_copy(
        update={"method": UNIMODAL_METHOD, "finetune": spec}),
        "train": cfg.train.model_copy(update={"checkpoint_dir": ""})})
    tuned = finetune(tuned_cfg, fs, preprocessed)
    head, adapted = tuned.head, tuned.features
    val = predict_split(head, adapted.split_inputs("val", adapted.modalities))
    return [(FINETUNED + spec, time.perf_counter() - start, _test_row(head, adapted, val))]


def bench_small_data(fs: FeatureSet, cfg: RunConfig, fractions: list[float], seeds: list[int],
                     methods: list[str] | None = None,
                     on_row: Callable[[dict], None] | None = None,
                     finetune: list[str] | None = None, preprocessed: Path | None = None
                     ) -> list[dict]:
    """One row per (fraction, seed, model): ``auto`` (bagged and refitted), each fixed method,
    each unimodal head, and the ``linear`` head with the encoders fine-tuned as each of
    ``finetune`` says (``top:1``, ``lora:8``: items read from ``preprocessed``), beside the
    frozen ``linear`` row (added to ``methods`` when it is missing)."""
    methods = methods or sorted(FUSION_METHODS)
    if finetune and UNIMODAL_METHOD not in methods:
        methods = [*methods, UNIMODAL_METHOD]
    names = [AUTO, *methods, *(UNIMODAL + m for m in fs.modalities),
             *(FINETUNED + spec for spec in finetune or [])]
    rows = []
    # Seed outermost: a benchmark stopped early still has every fraction for the seeds it finished.
    for seed in seeds:
        for fraction in fractions:
            view = subsample(fs, fraction, seed)
            kept = int(np.isin(view.index["split"], ["train", "val"]).sum())
            for name in names:
                if name == AUTO:
                    results = _auto(view, cfg, seed)
                elif name.startswith(FINETUNED):
                    results = _finetuned(view, cfg, name[len(FINETUNED):], seed, preprocessed)
                else:
                    results = _fixed(view, cfg, name, seed)
                for model, seconds, fields in results:
                    row = {"fraction": fraction, "seed": seed, "train_val_rows": kept,
                           "model": model, "seconds": round(seconds, 2), **fields}
                    rows.append(row)
                    log.info("small-data %s", row)
                    if on_row:
                        on_row(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (fraction, model), best first within a fraction; wall time
    and calibration (ECE and log loss before/after the temperature) are means over seeds."""
    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        group = [r for r in rows if r["fraction"] == fraction]
        for model in dict.fromkeys(r["model"] for r in group):
            mine = [r for r in group if r["model"] == model]
            scores = [r["test_macro_f1"] for r in mine]
            out.append({"fraction": fraction, "model": model, "seeds": len(scores),
                        "train_val_rows": group[0]["train_val_rows"],
                        "mean": statistics.fmean(scores),
                        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                        **{k: statistics.fmean(r[k] for r in mine) for k in CALIBRATION_FIELDS
                           if all(k in r for r in mine)},
                        "seconds": statistics.fmean(r["seconds"] for r in mine),
                        "winners": sorted({r.get("winner") for r in mine if r.get("winner")})})
    return sorted(out, key=lambda s: (s["fraction"], -s["mean"]))


CALIBRATION_FIELDS = ("ece_before", "ece_after", "log_loss_before", "log_loss_after")


def markdown_table(rows: list[dict]) -> str:
    """Per fraction: every model's test macro-F1 (mean ± std over seeds), test ECE and log
    loss before → after calibration, and wall time.

    >>> print(markdown_table([{"fraction": 1.0, "seed": 0, "train_val_rows": 9, "model": "late",
    ...     "test_macro_f1": 0.5, "seconds": 1.0, "ece_before": 0.2, "ece_after": 0.1,
    ...     "log_loss_before": 0.9, "log_loss_after": 0.8}]).splitlines()[-1])
    | 100% | 9 | late | 0.500 ± 0.000 | 0.200 → 0.100 | 0.900 → 0.800 | 1.0 |  |
    """
    lines = ["| train+val kept | rows | model | test macro-F1 | test ECE before → after "
             "| test log loss before → after | seconds | auto chose |",
             "|---|---|---|---|---|---|---|---|"]

    def change(s: dict, name: str) -> str:
        before, after = s.get(f"{name}_before"), s.get(f"{name}_after")
        return f"{before:.3f} → {after:.3f}" if before is not None and after is not None else ""

    for s in summarise(rows):
        lines.append(f"| {s['fraction']:.0%} | {s['train_val_rows']} | {s['model']} | "
                     f"{s['mean']:.3f} ± {s['std']:.3f} | {change(s, 'ece')} | "
                     f"{change(s, 'log_loss')} | {s['seconds']:.1f} | {', '.join(s['winners'])} |")
    return "\n".join(lines)


def write_rows(rows: list[dict], out: Path) -> None:
    """The rows as JSON and the table as markdown beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown_table(rows) + "\n")
