"""Colour words in text: what a cloud whose colours were dropped cannot show.

Training zeroes some clouds' colours (``data.colour_dropout``) so the model also learns from xyz-only clouds, but the
answers still name the colours. Trained as written, those answers teach the model to guess a colour from the shape,
the opposite of reading it from the cloud. ``colour_spans`` finds the colour words so the loss can leave them out
for such clouds, and ``strip_colour_words`` removes them from a caption (the ``words`` stage's targets).
"""

from __future__ import annotations

import re

from pointalign.data.geometry import PALETTE

# The generator's palette and the colour names common in real captions (Cap3D, PointLLM).
COLOUR_WORDS: frozenset[str] = frozenset(PALETTE) | frozenset(
    {
        "gray", "silver", "gold", "golden", "tan", "cyan", "magenta", "violet", "navy", "maroon", "turquoise",
        "teal", "cream", "ivory", "bronze", "copper", "olive", "lime", "khaki", "crimson", "indigo", "lavender",
        "coloured", "colored", "colourful", "colorful", "multicoloured", "multicolored",
    }
)  # fmt: skip
_PATTERN = re.compile(r"\b(?:" + "|".join(sorted(COLOUR_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def colour_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the colour words in ``text`` (whole words, any case)."""
    return [m.span() for m in _PATTERN.finditer(text)]


def strip_colour_words(text: str) -> str:
    """``text`` without its colour words (and the space before each)."""
    return re.sub(r"\s{2,}", " ", _PATTERN.sub("", text)).strip().replace(" .", ".").replace(" ,", ",")
