"""Text as the encoders see it: one normal form, whitespace collapsed.

>>> normalise_text("  Café\\u00a0au\\tlait ")
'Café au lait'
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str, lowercase: bool = False) -> str:
    """NFKC-normalise, collapse whitespace, strip; optionally lowercase."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    return text.lower() if lowercase else text
