"""Words in messages: counts written as a person writes them ("1 paper", "2 papers"),
and text from outside folded to one line."""

from __future__ import annotations

import re

__all__ = ["count", "one_line"]

_CTRL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """Control characters out, runs of white space (line breaks included) folded."""
    return " ".join(_CTRL_RE.sub(" ", text).split())


def count(number: int, noun: str, plural: str = "") -> str:
    """``count(1, "paper")`` -> ``1 paper``; ``count(2, "delivery", "deliveries")`` ->
    ``2 deliveries`` (without ``plural``, the noun and an s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
