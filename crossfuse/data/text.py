"""Text as the encoders see it: one normal form, whitespace collapsed.

>>> normalise_text("  Café\\u00a0au\\tlait ")
'Café au lait'
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str, lowercase: bool = False) -> str:
    """NFKC-normalise, collapse whitespace, strip; optionally lowercase."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    return text.lower() if lowercase else text


def word_dropout(text: str, level: float, rng: np.random.Generator) -> str:
    """Drop each whitespace-separated word with probability ``level``.

    >>> word_dropout("a red fox", 0.0, np.random.default_rng(0)), word_dropout("a b", 1.0, None)
    ('a red fox', '')
    """
    if level >= 1.0:
        return ""
    words = text.split()
    keep = rng.random(len(words)) >= level
    return " ".join(w for w, kept in zip(words, keep, strict=True) if kept)
