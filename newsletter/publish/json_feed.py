"""JSON Feed 1.1 documents, for the daily and the issues feeds.

Plain-text fields have ``<``, ``>`` and ``&`` escaped, so no digest text can read as
markup even if the JSON ends up inside an HTML page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from newsletter.config import Config
from newsletter.publish.names import JSON_TYPE

__all__ = ["JSON_TYPE", "json_document", "json_html", "json_text"]

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
# json.dumps leaves these as they are; escaped, the JSON can also sit inside an HTML page.
# str.replace per character: str.translate looks every character up in a dict, which made
# it most of the time a JSON Feed took.
_JSON_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
_LINE_SEPARATORS = _JSON_ESCAPES[3:]


def _escaped(text: str, escapes: Sequence[tuple[str, str]]) -> str:
    for char, escape_ in escapes:
        if char in text:
            text = text.replace(char, escape_)
    return text


def json_text(value: Any) -> str:
    """Compact JSON from the C encoder, with ``<``, ``>`` and ``&`` escaped as well."""
    return _escaped(json.dumps(value, ensure_ascii=False, separators=(",", ":")), _JSON_ESCAPES)


def json_html(markup: str) -> str:
    """HTML as a JSON string. The HTML is markup built here with every piece of digest
    text already escaped; escaping its own tags again as \\u003c would only make it larger."""
    return _escaped(json.dumps(markup, ensure_ascii=False), _LINE_SEPARATORS)


def json_document(
    cfg: Config, *, title: str, description: str, feed_url: str, items: Iterable[str]
) -> bytes:
    """A JSON Feed 1.1 document of ``items`` (each already JSON): UTF-8, one item a line."""
    head = {
        "version": JSON_FEED_VERSION,
        "title": title,
        "home_page_url": cfg.site_url,
        "feed_url": feed_url,
        "description": description,
        "language": cfg.language,
        "authors": [{"name": cfg.author_name}],
    }
    lines = [json_text(head)[:-1] + ',"items":[', ",\n".join(items), "]}\n"]
    return "\n".join(lines).encode("utf-8")
