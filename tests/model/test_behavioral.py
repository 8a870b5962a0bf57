"""Behavioural tests of the served model (Made-With-ML's ``tests/model`` style).

A model is trained once, with the real bundled encoders (MiniLM, EfficientNet-Lite0),
on the generated sample dataset, where the label is ``<shape>-<time>``: the image
carries the shape and the caption carries the time of day. The tests then ask the
served model (:class:`crossfuse.registry.serving.FusionPredictor`, what ``mlflow models
serve`` runs) what a user relies on:

- **invariance**: a caption's casing or trailing punctuation does not flip a confident
  prediction;
- **direction**: masking a modality that carries part of the label lowers the
  confidence in the true class;
- **minimum functionality**: a prototypical sample of each class is predicted right.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from crossfuse.config import load_config
from crossfuse.data.preprocess import preprocess
from crossfuse.data.sample import SHAPES, TIMES, class_labels, generate_sample_dataset
from crossfuse.data.validation import require_valid, validate
from crossfuse.features.extract import extract
from crossfuse.registry.serving import FusionPredictor
from crossfuse.training.train import train

pytestmark = pytest.mark.slow

CONFIDENT = 0.8


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[FusionPredictor, pd.DataFrame]:
    """(the served model, the held-out test rows as raw inputs with their labels)."""
    root = tmp_path_factory.mktemp("behavioral")
    data = root / "data"
    generate_sample_dataset(data, per_class=30, seed=1)
    cfg = load_config(None, [f"data.path={data}", "data.name=behavioral",
                             f"extract.cache_dir={root / 'cache'}",
                             f"train.checkpoint_dir={root / 'checkpoints'}"], env={}).resolved(root)
    require_valid(validate(cfg, data, root / "validation"))
    preprocess(cfg, data, root / "pre")
    extract(cfg, root / "pre", root / "features")
    train(cfg, root / "features", root / "model")
    manifest = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    samples = pd.read_parquet(root / "pre" / "samples.parquet")
    test_ids = set(samples.loc[samples["split"] == "test", "id"])
    test = manifest[manifest["id"].isin(test_ids)].reset_index(drop=True)
    test["image"] = [str(data / p) for p in test["image"]]
    return FusionPredictor(root / "model", media_root=data), test


def true_class_probability(predictions: pd.DataFrame, labels: pd.Series) -> np.ndarray:
    return np.array([predictions.at[i, f"p_{label}"] for i, label in enumerate(labels)])


def confident_rows(predictor: FusionPredictor, test: pd.DataFrame) -> pd.DataFrame:
    predictions = predictor.predict(test[["text", "image"]])
    keep = (predictions["label"] == test["label"]) & \
        (true_class_probability(predictions, test["label"]) >= CONFIDENT)
    confident = test[keep.to_numpy()].reset_index(drop=True)
    assert len(confident) >= len(test) // 2, "the model should be confident on most test rows"
    return confident


@pytest.mark.parametrize("edit", [str.upper, str.lower, lambda t: t.rstrip("."),
                                  lambda t: t.rstrip(".") + "!", lambda t: t + " "],
                         ids=["upper", "lower", "no-full-stop", "exclamation", "trailing-space"])
def test_invariance_caption_casing_and_punctuation(served, edit):
    predictor, test = served
    confident = confident_rows(predictor, test)
    edited = confident.assign(text=[edit(t) for t in confident["text"]])
    before = predictor.predict(confident[["text", "image"]])["label"]
    after = predictor.predict(edited[["text", "image"]])["label"]
    flipped = confident.loc[(before != after).to_numpy(), "text"].tolist()
    assert flipped == []


# The label is "<shape>-<time>": the image carries the shape, the caption the time.
KEPT_PART = {"text": 0, "image": 1}  # masking text keeps the shape (part 0), and vice versa


@pytest.mark.parametrize("masked", ["image", "text"])
def test_direction_masking_an_informative_modality_lowers_confidence(served, masked):
    predictor, test = served
    confident = confident_rows(predictor, test)
    full = true_class_probability(predictor.predict(confident[["text", "image"]]), confident["label"])
    without = predictor.predict(confident[["text", "image"]].assign(**{masked: None}))
    reduced = true_class_probability(without, confident["label"])
    # Half of the label is gone: the true class loses confidence on average ...
    assert reduced.mean() < full.mean() - 0.2
    # ... and the prediction changes only through the masked modality: the half of the
    # label that the remaining modality carries is still predicted right.
    part = KEPT_PART[masked]
    kept = [p.split("-")[part] == t.split("-")[part]
            for p, t in zip(without["label"], confident["label"], strict=True)]
    assert np.mean(kept) >= 0.9


def prototype_image(shape: str, path: Path) -> Path:
    """A large, centred, dark shape on a light background: the shape at its plainest."""
    img = Image.new("RGB", (64, 64), (235, 235, 235))
    draw = ImageDraw.Draw(img)
    box = (14, 14, 50, 50)
    if shape == "circle":
        draw.ellipse(box, fill=(30, 30, 30))
    elif shape == "square":
        draw.rectangle(box, fill=(30, 30, 30))
    else:
        draw.polygon([(32, 14), (14, 50), (50, 50)], fill=(30, 30, 30))
    img.save(path)
    return path


PROTOTYPE_CAPTIONS = {"day": "A fox was seen at noon.", "night": "A fox was seen at midnight."}


def test_minimum_functionality_prototypical_samples(served, tmp_path):
    predictor, _ = served
    rows = [{"image": base64.b64encode(prototype_image(shape, tmp_path / f"{shape}.png")
                                       .read_bytes()).decode(),
             "text": PROTOTYPE_CAPTIONS[time], "label": f"{shape}-{time}"}
            for shape in SHAPES for time in TIMES]
    frame = pd.DataFrame(rows)
    assert sorted(frame["label"]) == sorted(class_labels())
    predicted = predictor.predict(frame[["text", "image"]])["label"]
    wrong = frame.loc[(predicted != frame["label"]).to_numpy(), "label"].tolist()
    assert wrong == []
