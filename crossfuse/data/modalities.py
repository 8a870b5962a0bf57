"""One declaration per modality: everything the pipeline does that depends on what the data is.

A :class:`Modality` says whether its manifest cell names a media file (confined to the
dataset folder) or holds the value itself, and how to

- ``check`` a file (validation: the kind and the reason of each bad file),
- ``prepare`` a raw input (a file path, request bytes or a cell) for its encoder,
- ``degrade`` it on purpose for a benchmark (``preprocess.image_noise``; never when served),
- turn a prepared media item ``to_array`` (the fixed-shape array preprocessing stores in
  shard files, :mod:`crossfuse.data.media_shards`, and extraction reads back undecoded),
- ``load`` an item of the older one-file-per-item layout,
- add ``noise`` at a level in [0, 1] for the robustness sweeps,
- make a stored item the ``request_bytes`` a client would send.

Validation, preprocessing, extraction, serving and the robustness sweeps look a modality up
here and do not name one. Adding a modality is one encoder (``crossfuse/encoders/``), one
class here and its entry in :data:`MODALITY_REGISTRY` (and its name in
``crossfuse.config.MODALITIES``, the fixed column order).

Example
-------
>>> get_modality("audio").media, get_modality("text").media
(True, False)
>>> get_modality("audio").noise_kind
'snr_noise'
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from crossfuse.config import RunConfig
from crossfuse.data.audio import audio_problem, prepare_audio, read_waveform, snr_noise
from crossfuse.data.images import pixel_noise, prepare_image
from crossfuse.data.media_shards import MediaReader
from crossfuse.data.text import normalise_text, word_dropout
from crossfuse.errors import UserError


class Modality:
    """What the pipeline needs to know about one kind of input."""

    name: str
    media: bool  # the manifest cell is a file path relative to the dataset folder
    noise_kind: str  # the raw-input robustness curve's name
    folder: str = ""  # the preprocessed folder's subfolder for its shard files

    def check(self, source, relative: str, cfg: RunConfig) -> tuple[str, str] | None:
        """(kind, reason) when the file (path or binary file object) is unusable, else None."""
        return None

    def prepare(self, source, cfg: RunConfig) -> Any:
        """A raw input (file path, bytes, or the cell's value) as its encoder's input."""
        raise NotImplementedError

    def degrade(self, item: Any, cfg: RunConfig, rng: np.random.Generator) -> Any:
        """A benchmark's deliberate damage to the training data (``preprocess.*_noise``);
        none by default. Preprocessing only: the served model never adds it."""
        return item

    def to_array(self, item: Any) -> np.ndarray:
        """A prepared media item as the fixed-shape array its shard stores (media modalities)."""
        raise NotImplementedError

    def load(self, path: Path) -> Any:
        """One item of the older layout (one file per item), as its encoder's input."""
        raise NotImplementedError

    def reader(self, root: Path) -> MediaReader:
        """The reader of this modality's items in the preprocessed folder ``root``."""
        return MediaReader(root, self.load)

    def noise(self, item: Any, level: float, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def request_bytes(self, item: Any, cfg: RunConfig) -> bytes:
        """A stored item as a client would send it (a file format :meth:`check` accepts)."""
        raise NotImplementedError


class TextModality(Modality):
    name, media, noise_kind = "text", False, "word_dropout"

    def prepare(self, source, cfg: RunConfig) -> str:
        return normalise_text(source, cfg.preprocess.lowercase_text)

    def noise(self, item: str, level: float, rng: np.random.Generator) -> str:
        return word_dropout(item, level, rng)


class ImageModality(Modality):
    name, media, noise_kind, folder = "image", True, "pixel_noise", "images"

    def check(self, source, relative: str, cfg: RunConfig) -> tuple[str, str] | None:
        max_pixels = cfg.validation.max_image_pixels
        try:
            with Image.open(source) as img:
                if img.width * img.height > max_pixels:
                    return "image too large", (
                        f"image {relative} is {img.width}x{img.height}, above validation."
                        f"max_image_pixels={max_pixels} (a decompression-bomb guard)")
                img.load()
        except UnidentifiedImageError:
            return "not an image", (f"image file {relative} is not an image PIL can read "
                                    f"(wrong suffix or corrupt header)")
        except Image.DecompressionBombError as exc:
            return "image too large", f"image {relative} is above the pixel limit: {exc}"
        except Exception as exc:  # PIL raises many types for bad files
            if "truncated" in str(exc):
                return "image truncated", f"image file {relative} is truncated: {exc}"
            return "image does not decode", (f"image {relative} does not decode: "
                                             f"{type(exc).__name__}: {exc}")
        return None

    def prepare(self, source, cfg: RunConfig) -> Image.Image:
        return prepare_image(source, cfg.preprocess.image_size)

    def degrade(self, item: Image.Image, cfg: RunConfig, rng: np.random.Generator) -> Image.Image:
        level = cfg.preprocess.image_noise
        return pixel_noise(item, level, rng) if level > 0 else item

    def to_array(self, item: Image.Image) -> np.ndarray:
        """``uint8 [S, S, 3]`` RGB."""
        return np.asarray(item.convert("RGB"), dtype=np.uint8)

    def load(self, path: Path) -> np.ndarray:
        with Image.open(path) as img:
            return self.to_array(img)

    def noise(self, item: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        return pixel_noise(item, level, rng)

    def request_bytes(self, item: np.ndarray, cfg: RunConfig) -> bytes:
        """The pixels as a PNG file (lossless: the served model decodes the same pixels)."""
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(item, dtype=np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()


class AudioModality(Modality):
    name, media, noise_kind, folder = "audio", True, "snr_noise", "audio"

    def check(self, source, relative: str, cfg: RunConfig) -> tuple[str, str] | None:
        v = cfg.validation
        return audio_problem(source, relative, v.min_audio_seconds, v.max_audio_seconds,
                             v.max_audio_channels)

    def prepare(self, source, cfg: RunConfig) -> np.ndarray:
        return prepare_audio(source, audio_sample_rate(cfg), cfg.preprocess.audio_seconds)

    def to_array(self, item: np.ndarray) -> np.ndarray:
        """float32 ``[round(audio_seconds * rate)]``."""
        return np.asarray(item, dtype=np.float32)

    def load(self, path: Path) -> np.ndarray:
        return read_waveform(path)

    def request_bytes(self, item: np.ndarray, cfg: RunConfig) -> bytes:
        """The prepared waveform as a 32-bit float WAV at the encoder's rate."""
        buffer = io.BytesIO()
        sf.write(buffer, np.asarray(item, dtype=np.float32), audio_sample_rate(cfg),
                 subtype="FLOAT", format="WAV")
        return buffer.getvalue()

    def noise(self, item: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        return snr_noise(item, level, rng)


def audio_sample_rate(cfg: RunConfig) -> int:
    """The sample rate the run's audio encoder reads (preprocessing resamples to it)."""
    from crossfuse.encoders import encoder_sample_rate

    return encoder_sample_rate(cfg.extract.encoders.get("audio", "logmel"))


MODALITY_REGISTRY: dict[str, Modality] = {m.name: m for m in
                                          (ImageModality(), TextModality(), AudioModality())}


def get_modality(name: str) -> Modality:
    """The declaration of modality ``name`` (one of ``crossfuse.config.MODALITIES``)."""
    try:
        return MODALITY_REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown modality {name!r}; known: {list(MODALITY_REGISTRY)}") from None


def media_modalities(names: list[str]) -> list[str]:
    """Those of ``names`` whose manifest cell is a file path."""
    return [m for m in names if get_modality(m).media]
