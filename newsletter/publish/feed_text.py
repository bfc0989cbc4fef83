"""Digest text as the feeds write it: warning-free in the W3C Feed Validation Service.

- titles and summaries are ``type="html"`` holding escaped text, so ``<b>`` or ``&amp;``
  in a title shows as written in every reader (:func:`html_text`); author names, which
  have no type, get no markup-like sequence at all (:func:`plain`);
- characters the validator or an HTML parser refuses (C1 controls, noncharacters,
  U+FFFD) are dropped, from text and from HTML built from it (:func:`clean_html`).
"""

from __future__ import annotations

import html
import re
from html.entities import name2codepoint

from newsletter.archive.digest import clean_text

__all__ = ["clean_html", "html_text", "plain"]

# Characters XML 1.0 cannot carry, C1 controls (the validator's "BadCharacters"), U+FFFD
# (likewise) and the noncharacters a strict HTML parser refuses. The parser already
# replaced control characters in digest text; what else is here is dropped. The class
# takes in every character beyond the Basic Multilingual Plane: listing the 32 astral
# noncharacters one by one makes every scan ten times slower, so _unsafe() tells them
# from the other astral characters (emoji) when one is found.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffd-\uffff\U00010000-\U0010ffff]"
)
_SPACES = re.compile(r"\s{2,}")
_DOUBLE_ENCODED = re.compile("[\xc2\xc3][\x80-\xbf]")
# What the validator reads as markup in a plain-text element: an end tag, an e-mail
# address in angle brackets, and character references (see plain()).
_TAG_LIKE = re.compile(r"<(?=[/\w])")
_ENTITY_LIKE = re.compile(r"&(?=(#?\w+))")


def _text(text: str) -> str:
    """Text safe for XML and for the validator: feedgen raises on control characters."""
    if text.isascii() and text.isprintable():
        return text.strip()
    if "\xc2" in text or "\xc3" in text:
        # UTF-8 read as Latin-1 ("CafÃ©"): the validator flags it as bad characters, and
        # every such pair is the two bytes of one Latin-1 letter.
        text = _DOUBLE_ENCODED.sub(_decode_pair, text)
    text = clean_text(text)
    if _UNSAFE.search(text):
        text = _SPACES.sub(" ", _unsafe(text, " ")).strip()
    return text


def _decode_pair(match: re.Match[str]) -> str:
    return match.group().encode("latin-1").decode("utf-8")


def clean_html(markup: str) -> str:
    """HTML built from digest text, with what :func:`_text` drops dropped; the markup
    itself is ASCII, so this works on the whole document."""
    if "\xc2" in markup or "\xc3" in markup:
        markup = _DOUBLE_ENCODED.sub(_decode_pair, markup)
    return _unsafe(markup, "") if _UNSAFE.search(markup) else markup


def _unsafe(text: str, replacement: str) -> str:
    """``text`` with each character :data:`_UNSAFE` names replaced; astral characters
    other than the noncharacters (U+1FFFE, U+1FFFF, ...) stay."""

    def replace(match: re.Match[str]) -> str:
        code = ord(match.group())
        return replacement if code < 0x10000 or code & 0xFFFE == 0xFFFE else match.group()

    return _UNSAFE.sub(replace, text)


def html_text(text: str) -> str:
    """Plain text as the HTML of a ``type="html"`` element: it displays as written."""
    return html.escape(_text(text), quote=False)


def _defuse_entity(match: re.Match[str]) -> str:
    word = match.group(1)
    if word in name2codepoint or word == "apos" or not word.isalpha():
        return "& "
    return "&"


def plain(text: str) -> str:
    """Text for an element with no ``type`` (author names): nothing in it reads as markup.

    The validator warns when such text holds an end tag (``</b>``), an address in angle
    brackets or a character reference (``&amp;``), since many readers render it as HTML.
    A space after the ``<`` or ``&`` keeps every character and means nothing to a parser.
    """
    text = _text(text)
    if "<" in text:
        text = _TAG_LIKE.sub("< ", text)
    if "&" in text:
        text = _ENTITY_LIKE.sub(_defuse_entity, text)
    return text
