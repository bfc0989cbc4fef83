"""Atom 1.0 documents, for the daily and the issues feeds.

feedgen builds the document, with three of its 1.0.0 traps worked around:

- it drops ``rel``/``type``/``title`` from entry links (upstream issue #135), so entry
  links are added by a feedgen extension that writes the elements itself;
- it stamps ``updated`` with now(), so every ``updated`` is set explicitly;
- its media extension wraps thumbnails in ``media:group``, so ``media:thumbnail`` is
  written directly by the same extension.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from newsletter.config import Config
from newsletter.publish.feed_text import clean_html, html_text, plain
from newsletter.publish.names import ATOM_TYPE

__all__ = ["ATOM_TYPE", "AtomEntry", "atom_document"]

MEDIA_NS = "http://search.yahoo.com/mrss/"
GENERATOR = "newsletter"
# Feeds carry no clock; an empty feed still needs an `updated`, and this one never moves.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

try:
    _VERSION = version("newsletter")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    _VERSION = ""


@dataclass(frozen=True, slots=True)
class AtomEntry:
    """One Atom entry, in plain values; :func:`atom_document` writes it."""

    id: str
    title: str  # plain text, written as escaped HTML
    time: dt.datetime  # published and updated
    content: str  # HTML
    summary: str = ""  # HTML
    links: tuple[dict[str, str], ...] = ()
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    thumbnail: str | None = None


@functools.cache
def _extensions() -> tuple[type, type]:
    """The feedgen extensions, made on first use: feedgen and lxml are imported only by a
    process that writes a feed (a service start with its feeds current does not)."""
    from feedgen.ext.base import BaseEntryExtension, BaseExtension
    from feedgen.util import xml_elem
    from lxml.etree import CDATA

    class _AtomExtras(BaseExtension):  # type: ignore[misc]
        """Declares the Media RSS namespace on the feed element; marks its title and
        subtitle as HTML (feedgen has no parameter for it)."""

        def extend_ns(self) -> dict[str, str]:
            return {"media": MEDIA_NS}

        def extend_atom(self, feed: Any) -> Any:
            for name in ("title", "subtitle"):
                element = feed.find(name)
                if element is not None:
                    element.set("type", "html")
            return feed

    class _AtomEntryExtras(BaseEntryExtension):  # type: ignore[misc]
        """Writes the entry links and thumbnail that feedgen 1.0.0 would write wrongly,
        marks the title as HTML, and puts the HTML content in a CDATA section."""

        def __init__(self) -> None:
            self.links: Sequence[dict[str, str]] = ()
            self.thumbnail: str | None = None

        def extend_atom(self, entry: Any) -> Any:
            title = entry.find("title")
            if title is not None:
                title.set("type", "html")
            content = entry.find("content")
            # The HTML escapes every ">" of digest text, so "]]>" cannot occur in it: a CDATA
            # section holds it with no second layer of escaping.
            if content is not None and content.text and "]]>" not in content.text:
                content.text = CDATA(content.text)
            # feedgen writes the Atom namespace as a plain xmlns attribute on <feed>, so its
            # elements (and these) are unqualified in the tree and Atom once serialized.
            for link in self.links:
                xml_elem("link", entry, **link)
            if self.thumbnail is not None:
                xml_elem(f"{{{MEDIA_NS}}}thumbnail", entry, url=self.thumbnail)
            return entry

    return _AtomExtras, _AtomEntryExtras


def atom_document(
    cfg: Config,
    *,
    feed_id: str,
    title: str,
    subtitle: str,
    self_url: str,
    entries: Sequence[AtomEntry],
) -> bytes:
    """An Atom 1.0 document (UTF-8, ``xml:lang`` the feed language) of ``entries``, which
    come newest first; its ``updated`` is the first entry's time."""
    from feedgen.feed import FeedGenerator

    fg = FeedGenerator()
    fg.register_extension("extras", *_extensions(), atom=True, rss=False)
    fg.id(feed_id)
    fg.title(html_text(title))
    if subtitle:
        fg.subtitle(html_text(subtitle))
    fg.language(cfg.language)
    fg.author({"name": plain(cfg.author_name)})
    fg.link(href=self_url, rel="self", type=ATOM_TYPE)
    fg.link(href=cfg.site_url, rel="alternate", type="text/html")
    fg.generator(GENERATOR, version=_VERSION or None)
    fg.updated(entries[0].time if entries else EPOCH)
    for entry in entries:
        fe = fg.add_entry(order="append")
        fe.id(entry.id)
        fe.title(html_text(entry.title))
        fe.published(entry.time)
        fe.updated(entry.time)
        if entry.authors:
            fe.author([{"name": plain(name)} for name in entry.authors])
        if entry.categories:
            fe.category([{"term": term} for term in entry.categories])
        if entry.summary:
            fe.summary(clean_html(entry.summary), type="html")
        fe.content(clean_html(entry.content), type="html")
        fe.extras.links = entry.links
        fe.extras.thumbnail = entry.thumbnail
    data: bytes = fg.atom_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return data
