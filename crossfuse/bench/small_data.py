"""``crossfuse bench small-data``: ``auto`` against every fixed method and each modality alone,
as the labelled data shrinks.

Protocol, for each fraction of the train+val rows (stratified by class, seeded per seed;
the test split stays whole so every score is on the same rows):

- every fixed fusion method and each unimodal head (``concat`` on one modality), trained
  with the config's settings on the kept rows' train split and early-stopped on their
  val split — what ``--set fusion.method=<name>`` does;
- ``auto``: the cross-validated choice among its candidates (:mod:`crossfuse.training.selection`)
  on the kept rows, scored on test twice from the same choice: ``auto`` ships the winner
  bagged (its fold models averaged), ``auto:refit`` the winner refitted on all kept rows.

Each row: fraction, seed, model, test macro-F1, wall time, and for ``auto`` the winner.

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
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FUSION_METHODS
from crossfuse.metrics import predict_split
from crossfuse.training.folds import order_key
from crossfuse.training.loop import fit
from crossfuse.training.selection import (
    AUTO,
    UNIMODAL,
    UNIMODAL_METHOD,
    bagged,
    refit,
    select_model,
)

log = logging.getLogger(__name__)

UNUSED = "unused"
REFIT = AUTO + ":refit"


def subsample(fs: FeatureSet, fraction: float, seed: int) -> FeatureSet:
    """``fs`` with only ``fraction`` of each class's train+val rows kept (the rest: split ``unused``).

    Within a class, rows are ordered by a hash of ``(seed, id)``; the first ``ceil(fraction * n)``
    stay, keeping each split's share. Test rows are never touched.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fractions must be in (0, 1], got {fraction}")
    split = fs.index["split"].to_numpy().copy()
    labeled = np.isin(split, ["train", "val"])
    for label in np.unique(fs.index["label_idx"].to_numpy()[labeled]):
        rows = np.flatnonzero(labeled & (fs.index["label_idx"].to_numpy() == label))
        rows = sorted(rows, key=lambda r: order_key(seed, str(fs.index["id"].iat[r])))
        split[rows[math.ceil(fraction * len(rows)):]] = UNUSED
    return dataclasses.replace(fs, index=fs.index.assign(split=split))


def _test_f1(model, fs: FeatureSet) -> float:
    return predict_split(model, fs.split_inputs("test", list(model.spec.dims),
                                                model.spec.token_inputs)).macro_f1


def _auto(fs: FeatureSet, cfg: RunConfig, seed: int) -> list[tuple[str, float, float, dict]]:
    """``auto`` bagged and refitted from one selection: (model, test macro-F1, seconds, extra)."""
    cfg = cfg.model_copy(update={"seed": seed, "fusion": cfg.fusion.model_copy(update={"method": AUTO})})
    start = time.perf_counter()
    selection = select_model(fs, cfg)
    by_name = {c.name: c for c in selection.ranked}
    bagged_f1 = _test_f1(bagged(selection.winner, by_name), fs)
    chosen = time.perf_counter() - start
    refit_f1 = _test_f1(refit(selection.winner, by_name, fs, seed), fs)
    extra = {"winner": selection.winner.name, "cv_macro_f1": round(selection.winner.mean, 4)}
    return [(AUTO, bagged_f1, chosen, extra),
            (REFIT, refit_f1, time.perf_counter() - start, extra)]


def _fixed(fs: FeatureSet, cfg: RunConfig, name: str, seed: int) -> list[tuple[str, float, float, dict]]:
    start = time.perf_counter()
    unimodal = name.startswith(UNIMODAL)
    modalities = [name[len(UNIMODAL):]] if unimodal else fs.modalities
    fusion = cfg.fusion.model_copy(update={"method": UNIMODAL_METHOD if unimodal else name})
    head, _ = fit(fs, fusion, cfg.train, seed, modalities=modalities)
    return [(name, _test_f1(head, fs), time.perf_counter() - start, {})]


def bench_small_data(fs: FeatureSet, cfg: RunConfig, fractions: list[float], seeds: list[int],
                     methods: list[str] | None = None,
                     on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per (fraction, seed, model): ``auto`` (bagged and refitted), each fixed method,
    each unimodal head."""
    methods = methods or sorted(FUSION_METHODS)
    names = [AUTO, *methods, *(UNIMODAL + m for m in fs.modalities)]
    rows = []
    # Seed outermost: a benchmark stopped early still has every fraction for the seeds it finished.
    for seed in seeds:
        for fraction in fractions:
            view = subsample(fs, fraction, seed)
            kept = int(np.isin(view.index["split"], ["train", "val"]).sum())
            for name in names:
                results = _auto(view, cfg, seed) if name == AUTO else _fixed(view, cfg, name, seed)
                for model, score, seconds, extra in results:
                    row = {"fraction": fraction, "seed": seed, "train_val_rows": kept,
                           "model": model, "test_macro_f1": score, "seconds": round(seconds, 2),
                           **extra}
                    rows.append(row)
                    log.info("small-data %s", row)
                    if on_row:
                        on_row(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (fraction, model), best first within a fraction."""
    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        group = [r for r in rows if r["fraction"] == fraction]
        for model in dict.fromkeys(r["model"] for r in group):
            scores = [r["test_macro_f1"] for r in group if r["model"] == model]
            seconds = [r["seconds"] for r in group if r["model"] == model]
            out.append({"fraction": fraction, "model": model, "seeds": len(scores),
                        "train_val_rows": group[0]["train_val_rows"],
                        "mean": statistics.fmean(scores),
                        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                        "seconds": statistics.fmean(seconds),
                        "winners": sorted({r.get("winner") for r in group
                                           if r["model"] == model and r.get("winner")})})
    return sorted(out, key=lambda s: (s["fraction"], -s["mean"]))


def markdown_table(rows: list[dict]) -> str:
    """Per fraction: every model's test macro-F1 (mean ± std over seeds) and wall time."""
    lines = ["| train+val kept | rows | model | test macro-F1 | seconds | auto chose |",
             "|---|---|---|---|---|---|"]
    for s in summarise(rows):
        lines.append(f"| {s['fraction']:.0%} | {s['train_val_rows']} | {s['model']} | "
                     f"{s['mean']:.3f} ± {s['std']:.3f} | {s['seconds']:.1f} | "
                     f"{', '.join(s['winners'])} |")
    return "\n".join(lines)


def write_rows(rows: list[dict], out: Path) -> None:
    """The rows as JSON and the table as markdown beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown_table(rows) + "\n")
