"""Any image a user can meet, as the 8-bit RGB the encoders expect, by value.

Pillow's own ``convert("RGB")`` is right for the 8-bit modes but not for the rest: it
clips 16- and 32-bit integers at 255 (a 16-bit grayscale ramp comes out almost all
white), truncates floats in [0, 1] to black, and ignores transparency. :func:`to_rgb`
handles every mode by what its numbers mean:

==============================  ===========================================================
mode                            conversion
==============================  ===========================================================
``1``, ``L``, ``P``, ``RGB``,   Pillow (8-bit already; ``P`` through its palette; ``LAB``
``YCbCr``, ``HSV``, ``CMYK``,   as CIE L*a*b* D50 -> sRGB, which the tests check against
``LAB``                         the CIE formulas)
``LA``, ``PA``, ``RGBA``, and   alpha composited on white (a transparent background stays
``P`` with transparency         the white the encoders were trained to see around objects)
``I;16``, ``I;16L``, ``I;16B``,  ``v * 255 / 65535``, rounded: the full 16-bit range
``I;16N``
``I`` (32-bit integer)          by the largest value present: ``<= 255`` as 8-bit,
                                ``<= 65535`` as 16-bit (how 16-bit PNG/TIFF often open),
                                else scaled by the maximum; negatives are 0
``F`` (32-bit float)            ``[0, 1]`` data scaled by 255, ``[0, 255]`` data kept,
                                anything else min-max scaled; NaN is 0
==============================  ===========================================================

16-bit RGB(A) PNG and TIFF files open in Pillow as 8-bit ``RGB``/``RGBA`` (their high
byte), which is already right. EXIF orientation is applied before anything else.

Example
-------
>>> ramp = Image.frombytes("I;16", (256, 1), (np.arange(256, dtype="<u2") * 257).tobytes())
>>> np.asarray(to_rgb(ramp))[0, [0, 128, 255], 0].tolist()   # Pillow alone: [0, 255, 255]
[0, 128, 255]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, converted by what its mode's values mean (see the module table)."""
    mode = img.mode
    if mode in ALPHA or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in SIXTEEN_BIT:
        return _gray(np.asarray(img, dtype=np.float64) * (255.0 / 65535.0))
    if mode == "I":
        return _gray(_integer_scaled(np.asarray(img, dtype=np.float64)))
    if mode == "F":
        return _gray(_float_scaled(np.asarray(img, dtype=np.float64)))
    return img.convert("RGB")


def _integer_scaled(values: np.ndarray) -> np.ndarray:
    top = values.max(initial=0.0)
    full = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
    return np.clip(values, 0, None) * (255.0 / full)


def _float_scaled(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = values.min(initial=0.0), values.max(initial=0.0)
    if low >= 0 and high <= 1:
        return values * 255.0
    if low >= 0 and high <= 255:
        return values
    return (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)


def _gray(values: np.ndarray) -> Image.Image:
    """A gray ``[H, W]`` array in [0, 255] as an RGB image."""
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))


def load_rgb(path: Path) -> Image.Image:
    """Open an image file as 8-bit RGB: EXIF orientation applied, then :func:`to_rgb`."""
    with Image.open(path) as img:
        return to_rgb(ImageOps.exif_transpose(img))


def prepare_image(path: Path, size: int) -> Image.Image:
    """Decode ``path`` and resize it to ``size`` x ``size`` (bicubic) as RGB."""
    return load_rgb(path).resize((size, size), Image.Resampling.BICUBIC)


def pixel_noise(image: Image.Image | np.ndarray, level: float,
                rng: np.random.Generator) -> Image.Image | np.ndarray:
    """Gaussian pixel noise: pixels scaled to [0, 1], std ``level``, clipped, back to 8 bits.

    An RGB image gives an image, ``uint8 [H, W, 3]`` pixels give pixels.
    """
    array = isinstance(image, np.ndarray)
    pixels = np.asarray(image if array else image.convert("RGB"), dtype=np.float32) / 255.0
    noisy = (np.clip(pixels + rng.normal(0.0, level, pixels.shape), 0.0, 1.0) * 255.0
             ).round().astype(np.uint8)
    return noisy if array else Image.fromarray(noisy)
