"""Deterministic sample dataset: the default ``data/`` that ``make run`` trains on.

Each sample is a small PNG of one shape (circle, square or triangle, random colour,
size and position on a random light background) and a one-sentence caption set
either by day or by night. The label is the pair — ``circle-day``,
``triangle-night``, ... — so neither modality alone can tell all six classes
apart: the image knows the shape, the text knows the time of day. A unimodal
model tops out near 1/2 (image) or 1/3 (text) accuracy; the fused model should
be near perfect.

Regenerating with the same arguments is byte-identical (fixed seeds, no
timestamps in the PNGs), so ``dvc status`` of a fresh clone that regenerates
``data/`` is clean.

Example
-------
>>> from pathlib import Path
>>> generate_sample_dataset(Path("/tmp/sample"), per_class=10).n_samples
60
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
TIMES = ("day", "night")
IMAGE_SIZE = 64

_TIME_WORDS = {
    "day": ["at noon", "in bright sunshine", "at sunrise", "under a blue morning sky",
            "in the afternoon light", "on a sunny day", "at midday", "in broad daylight"],
    "night": ["at midnight", "under the moonlight", "after dark", "beneath the stars",
              "late at night", "in the dead of night", "by lamplight at night", "at dusk"],
}
_SUBJECTS = ["a cyclist", "an old dog", "two friends", "a street musician", "a delivery van",
             "a quiet harbour", "a fox", "a market stall", "a lone runner", "a small cafe",
             "a bus stop", "a garden", "a fisherman", "a town plaza", "a child", "a train"]
_VERBS = ["was seen", "waited", "passed by", "stood still", "appeared", "rested", "was photographed"]


@dataclass(frozen=True)
class SampleDataset:
    root: Path
    n_samples: int
    labels: tuple[str, ...]


def class_labels() -> tuple[str, ...]:
    """The six labels, ``shape-time``, in a fixed order."""
    return tuple(f"{s}-{t}" for s in SHAPES for t in TIMES)


def _draw_shape(rng: np.random.Generator, shape: str) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(170, 256, size=3))
    colour = tuple(int(v) for v in rng.integers(0, 140, size=3))
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(22, 44))
    x0 = int(rng.integers(2, IMAGE_SIZE - size - 2))
    y0 = int(rng.integers(2, IMAGE_SIZE - size - 2))
    box = (x0, y0, x0 + size, y0 + size)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x0 + size / 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=colour)
    return img


def _caption(rng: np.random.Generator, time: str) -> str:
    subject = _SUBJECTS[int(rng.integers(len(_SUBJECTS)))]
    verb = _VERBS[int(rng.integers(len(_VERBS)))]
    when = _TIME_WORDS[time][int(rng.integers(len(_TIME_WORDS[time])))]
    return f"{subject[0].upper()}{subject[1:]} {verb} {when}."


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


AUDIO_RATE = 8000
TONE_HZ = {"day": 880.0, "night": 330.0}  # the time of day, heard: a high or a low tone


def _tone(rng: np.random.Generator, time: str) -> np.ndarray:
    """A short tone (pitch = the time of day, +-5%), random length, level and phase, with
    faint white noise: int16 samples at :data:`AUDIO_RATE`."""
    seconds = rng.uniform(0.5, 1.0)
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    hz = TONE_HZ[time] * rng.uniform(0.95, 1.05)
    wave = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
    wave += rng.normal(0.0, 0.01, t.shape)
    return (np.clip(wave, -1, 1) * 32767).astype(np.int16)


def generate_sample_dataset(root: Path, per_class: int = 120, seed: int = 0,
                            audio: bool = False) -> SampleDataset:
    """Write the sample dataset to ``root`` (``manifest.csv`` + ``images/*.png``).

    Parameters
    ----------
    root: output folder; created if missing. Existing files with the same names are overwritten.
    per_class: samples per label (6 labels), so ``6 * per_class`` rows.
    seed: generator seed; the same seed gives byte-identical files.
    audio: also write ``audio/*.wav`` (an ``audio`` column): a tone whose pitch says the
        time of day, like the caption does, so image + audio also needs fusion. The images
        and captions are the same as without it.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    audio_rng = np.random.default_rng([seed, 1])  # its own stream: images and texts unchanged
    if audio:
        import soundfile as sf

        (root / "audio").mkdir(exist_ok=True)
    rows = []
    for _ in range(per_class):
        for shape in SHAPES:
            for time in TIMES:
                sample_id = f"s{len(rows):05d}"
                rel = f"images/{sample_id}.png"
                (root / rel).write_bytes(_png_bytes(_draw_shape(rng, shape)))
                row = {"id": sample_id, "image": rel, "text": _caption(rng, time),
                       "label": f"{shape}-{time}"}
                if audio:
                    row["audio"] = f"audio/{sample_id}.wav"
                    sf.write(root / row["audio"], _tone(audio_rng, time), AUDIO_RATE,
                             subtype="PCM_16", format="WAV")
                rows.append(row)
    columns = ["id", "image", "text", *(["audio"] if audio else []), "label"]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return SampleDataset(root=root, n_samples=len(rows), labels=class_labels())
