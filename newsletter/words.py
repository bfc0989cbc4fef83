"""Words in messages: counts written as a person writes them ("1 paper", "2 papers"),
text from outside folded to one line, and plain text wrapped for reading in a mail client."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable

__all__ = ["TEXT_WIDTH", "count", "one_line", "wrap"]

_CTRL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
# RFC 5322 2.1.1: lines SHOULD be at most 78 characters. It counts characters, not screen
# columns, so a Korean syllable (two columns in a terminal) counts as one, like a letter.
TEXT_WIDTH = 78
# What a list item's continuation lines line up under: the indent and the item's mark
# (``- ``, ``1. ``), or a short heading set off by two spaces (``1위  ``, ``No. 1  ``).
_HANG_RE = re.compile(r"\s*(?:(?:[-*•]|\d+[.)])\s+|\S.{0,10}?\S {2,})?")


def one_line(text: str) -> str:
    """Control characters out, runs of white space (line breaks included) folded."""
    return " ".join(_CTRL_RE.sub(" ", text).split())


def count(number: int, noun: str, plural: str = "") -> str:
    """``count(1, "paper")`` -> ``1 paper``; ``count(2, "delivery", "deliveries")`` ->
    ``2 deliveries`` (without ``plural``, the noun and an s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def wrap(text: str, width: int = TEXT_WIDTH, *, alone: Iterable[str] = ()) -> str:
    """``text`` with each line longer than ``width`` characters broken at spaces, a list
    item's continuation lines indented under its text. A word longer than ``width`` (a URL)
    is never cut: it gets a line of its own, the only kind of line that can be longer.
    Each of ``alone`` (a placeholder for a URL put in later, whose length is not known
    yet) is put on a line of its own. Only ASCII spaces break lines: a no-break space
    keeps ``추천 53`` together."""
    marks = [mark for mark in alone if mark]
    split = re.compile("(" + "|".join(map(re.escape, marks)) + ")") if marks else None
    out: list[str] = []
    for line in text.split("\n"):
        if split is None or not split.search(line):
            out.extend(_wrap_line(line, width))
            continue
        for piece in split.split(line):
            if piece.strip():
                out.extend(_wrap_line(piece.rstrip() if piece in marks else piece.strip(), width))
    return "\n".join(out)


def _wrap_line(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    hang = _HANG_RE.match(line)
    indent = " " * (hang.end() if hang else 0)
    return textwrap.wrap(
        line,
        width,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [line]
