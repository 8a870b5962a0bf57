"""Examples a reviewer looks at: the test rows the model got wrong, its training curves,
and one request as a client would send it (the registered model's input example).

Files written to the evaluation folder:

- ``misclassified.json`` — up to ``limit`` wrong test predictions, most confident first:
  ``{"id", "label", "predicted", "confidence", "text", "thumbnail"}`` (thumbnail: a small
  PNG, base64; text cut to 300 characters);
- ``training_curves.png`` — from the model's ``training_history.json`` (single-method
  runs; ``fusion.method: auto`` trains fold models and has CV scores instead);
- ``request_example.json`` — one test row, ``{column: value}``, images as base64 bytes.

Example
-------
>>> rows = misclassified_rows(predictions, samples, Path("prep"), limit=12)   # doctest: +SKIP
>>> rows[0]["label"], rows[0]["predicted"], round(rows[0]["confidence"], 2)  # doctest: +SKIP
('circle-day', 'square-day', 0.91)
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from crossfuse.atomic import write_json
from crossfuse.data.modalities import get_modality
from crossfuse.fusion.model import HISTORY_FILE
from crossfuse.plots import plot_training_curves

MISCLASSIFIED_FILE = "misclassified.json"
CURVES_FILE = "training_curves.png"
REQUEST_EXAMPLE_FILE = "request_example.json"
THUMBNAIL_PX = 96
TEXT_CHARS = 300


def thumbnail_base64(pixels: np.ndarray, size: int = THUMBNAIL_PX) -> str:
    """A PNG thumbnail (longest side ``size``) of ``uint8 [H, W, 3]`` pixels, base64-encoded."""
    small = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    small.thumbnail((size, size))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def misclassified_rows(predictions: pd.DataFrame, samples: pd.DataFrame | None,
                       preprocessed: Path | None, limit: int = 12) -> list[dict]:
    """The wrong test predictions, most confident first, with what the model saw.

    ``predictions``: ``predictions.parquet`` (id, label, predicted, ``p_<class>``);
    ``samples``: the preprocessed ``samples.parquet`` (text and image path per id), or
    None (no thumbnails or text, only the labels and confidence).
    """
    wrong = predictions[predictions["label"] != predictions["predicted"]].copy()
    probs = wrong[[c for c in wrong.columns if c.startswith("p_")]]
    wrong["confidence"] = probs.max(axis=1) if len(wrong) else []
    wrong = wrong.sort_values(["confidence", "id"], ascending=[False, True]).head(limit)
    by_id = samples.set_index("id") if samples is not None else None
    rows = []
    for record in wrong.itertuples(index=False):
        row = {"id": str(record.id), "label": str(record.label),
               "predicted": str(record.predicted), "confidence": float(record.confidence),
               "text": "", "thumbnail": ""}
        if by_id is not None and record.id in by_id.index:
            sample = by_id.loc[record.id]
            text = sample.get("text")
            if isinstance(text, str):
                row["text"] = text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…"
            image = sample.get("image")
            if isinstance(image, str) and image and preprocessed is not None:
                pixels = get_modality("image").reader(preprocessed).load([image])[0]
                row["thumbnail"] = thumbnail_base64(pixels)
        rows.append(row)
    return rows


def write_misclassified(predictions: pd.DataFrame, samples: pd.DataFrame | None,
                        preprocessed: Path | None, out_dir: Path, limit: int = 12) -> Path:
    path = Path(out_dir) / MISCLASSIFIED_FILE
    write_json(path, misclassified_rows(predictions, samples, preprocessed, limit))
    return path


def write_training_curves(model_dir: Path, out_dir: Path) -> Path | None:
    """``training_curves.png`` from the model's epoch history; None when it has none."""
    history_file = Path(model_dir) / HISTORY_FILE
    if not history_file.is_file():
        return None
    saved = json.loads(history_file.read_text())
    if not saved["history"]:
        return None
    return plot_training_curves(saved["history"], saved["best_epoch"], Path(out_dir) / CURVES_FILE)


def write_request_example(raw_inputs: pd.DataFrame, out_dir: Path) -> Path | None:
    """The first row of ``raw_inputs`` (a client's request) as ``request_example.json``."""
    if raw_inputs.empty:
        return None
    row = {k: (None if pd.isna(v) else v) for k, v in raw_inputs.iloc[0].items()}
    path = Path(out_dir) / REQUEST_EXAMPLE_FILE
    write_json(path, row)
    return path
