"""Atom and JSON Feed bytes from the daily top papers.

Pure functions of the archive and the settings: nothing here reads the clock, so the
same archive always gives the same bytes and a rebuild with no new digest leaves the
files (and their ETags) unchanged.

The feeds are in ``cfg.language``: their ``xml:lang``, the section labels (through the
catalogs of :mod:`newsletter.publish.render`) and the words around the summaries; the summaries
stay as written, their own inline Markdown rendered by :mod:`newsletter.publish.inline`.

Every entry is warning-free in the W3C Feed Validation Service:

- each entry of a day has its own time, a second apart from ``feed_time`` on, rank 1 the
  newest, so a reader sorting by date keeps the ranking (:func:`entry_time`);
- titles and summaries are ``type="html"`` holding escaped text, so ``<b>`` or ``&amp;``
  in a title shows as written in every reader; author names, which have no type, get
  no markup-like sequence at all (see :func:`plain`);
- characters the validator or an HTML parser refuses (C1 controls, noncharacters,
  U+FFFD) are dropped.

feedgen builds the Atom document, with three of its 1.0.0 traps worked around:

- it drops ``rel``/``type``/``title`` from entry links (upstream issue #135), so entry
  links are added by a feedgen extension that writes the elements itself;
- it stamps ``updated`` with now(), so every ``updated`` is set explicitly;
- its media extension wraps thumbnails in ``media:group``, so ``media:thumbnail`` is
  written directly by the same extension.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.entities import name2codepoint
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup, escape

from newsletter.archive.digest import clean_text
from newsletter.config import Config
from newsletter.files import PUBLIC_FILE, public_folder, write_file
from newsletter.models import Archive, Digest, Media, Paper, Pick, Section
from newsletter.publish import inline
from newsletter.select import top_daily

log = logging.getLogger(__name__)

__all__ = [
    "ATOM_NAME",
    "ATOM_TYPE",
    "ISSUES_ATOM_NAME",
    "ISSUES_JSON_NAME",
    "JSON_NAME",
    "JSON_TYPE",
    "AtomEntry",
    "FeedItem",
    "Words",
    "atom_bytes",
    "atom_document",
    "day_url",
    "entry_html",
    "feed_entries",
    "json_document",
    "json_feed_bytes",
    "json_html",
    "json_text",
    "plain",
    "points_html",
    "tag_id",
    "words",
    "write_feeds",
    "write_if_changed",
    "write_public",
]

ATOM_NAME = "feed.atom"
JSON_NAME = "feed.json"
# The weekly issues' feeds (newsletter.publish.issue_feed).
ISSUES_ATOM_NAME = "issues.atom"
ISSUES_JSON_NAME = "issues.json"
ATOM_TYPE = "application/atom+xml"
JSON_TYPE = "application/feed+json"
MEDIA_NS = "http://search.yahoo.com/mrss/"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "newsletter"
# Author elements per entry. Papers with dozens or hundreds of authors are common; the
# rest are named in the content, never as a made-up "and N more" author.
MAX_AUTHORS = 5
# Names in the content's author line before "and N more": a paper with hundreds of
# authors would otherwise outweigh a whole day of others.
AUTHORS_IN_CONTENT = 20
# Feeds carry no clock; an empty feed still needs an `updated`, and this one never moves.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}
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


try:
    _VERSION = version("newsletter")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    _VERSION = ""


# -- the words a feed adds, in its language ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Words:
    """The words a feed puts around the summaries, in one language (from the catalogs)."""

    lang: str
    locale: str
    gettext: Callable[[str], str]
    ngettext: Callable[[str, str, int], str]
    video: str
    hf_page: str
    day_rank: str
    papers_of: str
    authors: str
    # Babel takes tens of microseconds a call; a feed repeats few dates and vote counts.
    dates: dict[dt.date, str] = field(default_factory=dict)
    counts: dict[int, str] = field(default_factory=dict)

    def date(self, day: dt.date) -> str:
        """``2024년 5월 20일`` / ``May 20, 2024``."""
        text = self.dates.get(day)
        if text is None:
            from babel.dates import format_date

            text = self.dates[day] = str(format_date(day, format="long", locale=self.locale))
        return text

    def votes(self, votes: int) -> str:
        """``추천 1,234`` / ``1,234 votes``."""
        text = self.counts.get(votes)
        if text is None:
            from babel.numbers import format_decimal

            number = str(format_decimal(votes, locale=self.locale))
            text = self.ngettext("%(votes)s vote", "%(votes)s votes", votes) % {"votes": number}
            self.counts[votes] = text
        return text

    def more(self, count: int) -> str:
        return self.ngettext("and %(count)s more", "and %(count)s more", count) % {"count": count}


@functools.cache
def words(lang: str) -> Words:
    """The feed words of ``lang``; section labels go through the same catalog entries as
    the email's (render.KNOWN_LABELS), so both say ``새로운 점``."""
    # Imported here: render imports this module (write_if_changed).
    from newsletter.publish.render import LOCALES, translations_for

    t = translations_for(lang)
    return Words(
        lang=lang,
        locale=LOCALES[lang],
        gettext=t.gettext,
        ngettext=t.ngettext,
        video=t.gettext("Watch the video"),
        hf_page=t.gettext("Hugging Face paper page"),
        day_rank=t.gettext("No. %(rank)d of %(date)s"),
        papers_of=t.gettext("Papers of %(date)s"),
        authors=t.gettext("Authors: %(names)s"),
    )


# -- text ----------------------------------------------------------------------------------


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


def _clean_html(markup: str) -> str:
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


def _html_text(text: str) -> str:
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


# -- the daily entries ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One feed entry: the paper as first selected, its permanent id and its time."""

    pick: Pick
    id: str
    time: dt.datetime

    @property
    def paper(self) -> Paper:
        return self.pick.paper


def tag_id(domain: str, year: int, arxiv_id: str) -> str:
    """The permanent entry id (RFC 4151): ``tag:example.org,2024:arxiv:2405.10725``."""
    return f"tag:{domain},{year}:arxiv:{arxiv_id}"


def day_url(cfg: Config, day: dt.date) -> str:
    """The web page of a day's papers: ``{site_url}days/2024-05-20.html``."""
    return f"{cfg.site_url}days/{day.isoformat()}.html"


def entry_time(pick: Pick, cfg: Config) -> dt.datetime:
    """The day's ``feed_time`` plus one second per place below rank 1: with the top 10,
    rank 1 at 09:00:09 and rank 10 at 09:00:00. Every entry of a day has its own time and
    rank 1 is the newest, as readers sort newest first; the day's entries all stay after
    ``feed_time``, so a reader in UTC, for which 09:00 in Seoul is midnight, still shows
    them on their day."""
    start = dt.datetime.combine(pick.date, cfg.feed_clock, tzinfo=cfg.tz)
    return start + dt.timedelta(seconds=max(cfg.top_n_daily - pick.rank, 0))


def feed_entries(digests: Iterable[Digest], cfg: Config) -> list[FeedItem]:
    """The papers of the feed, newest day first, each day in rank order.

    Each digest contributes its daily top ``top_n_daily``. A paper selected on several
    days is one entry, at the first of them; the window is the ``feed_days`` days up to
    the newest digest (never the wall clock), so a paper first selected before the
    window is not brought back by a later appearance. The id year is the year the paper
    first appeared anywhere in the archive, so ids never change as the window moves.
    """
    ordered = sorted(digests, key=lambda d: d.date)
    if not ordered:
        return []
    start = ordered[-1].date - dt.timedelta(days=cfg.feed_days - 1)
    first_seen: dict[str, dt.date] = {}
    for digest in ordered:
        for paper in digest.papers:
            first_seen.setdefault(paper.arxiv_id, digest.date)
    chosen: dict[str, Pick] = {}
    for digest in ordered:
        if digest.date >= start:
            for pick in top_daily(digest, cfg.top_n_daily):
                chosen.setdefault(pick.paper.arxiv_id, pick)
    # Papers seen before the window may have been selected there already: those days
    # alone are ranked, so the cost follows the window rather than the archive.
    earlier = {key for key in chosen if first_seen[key] < start}
    for digest in ordered:
        if digest.date >= start or not earlier:
            break
        if any(paper.arxiv_id in earlier for paper in digest.papers):
            for pick in top_daily(digest, cfg.top_n_daily):
                if pick.paper.arxiv_id in earlier:
                    del chosen[pick.paper.arxiv_id]
                    earlier.discard(pick.paper.arxiv_id)
    domain = cfg.tag_domain
    items = [
        FeedItem(
            pick,
            tag_id(domain, first_seen[pick.paper.arxiv_id].year, pick.paper.arxiv_id),
            entry_time(pick, cfg),
        )
        for pick in chosen.values()
    ]
    items.sort(key=lambda item: (-item.pick.date.toordinal(), item.pick.rank))
    return items


def _http_url(url: str) -> str | None:
    """``url`` when it is an absolute http(s) URL, else None: other schemes are dropped."""
    parts = urlsplit(url)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return url
    return None


def _media(paper: Paper) -> Media | None:
    if paper.media is None or _http_url(paper.media.url) is None:
        return None
    return paper.media


def points_html(sections: Sequence[Section], w: Words) -> Markup:
    """The summary points as (nested) lists, labels translated and in bold, each point's
    own inline Markdown rendered (links, bold, emphasis, code) and everything else escaped."""
    # f-strings of escape() and to_html() (both safe HTML): several times faster than
    # Markup's % or format(), which matters at hundreds of entries a build.
    out: list[str] = []
    depth = -1
    for section in sections:
        level = min(section.level, depth + 1)  # never open two levels at once
        if level > depth:
            out.append("<ul>")
            depth = level
        else:
            out.append("</li>")
            out.extend("</ul></li>" for _ in range(depth - level))
            depth = level
        text = inline.to_html(section.text)
        if section.label:
            out.append(f"<li><strong>{escape(w.gettext(section.label))}</strong>: {text}")
        else:
            out.append(f"<li>{text}")
    if depth >= 0:
        out.append("</li>" + "</ul></li>" * depth + "</ul>")
    return Markup("".join(out))


def _authors(paper: Paper) -> list[str]:
    """The first ``MAX_AUTHORS`` authors, for the author elements; the content names the
    others (:func:`byline`)."""
    return list(paper.authors[:MAX_AUTHORS])


def byline(authors: Sequence[str], w: Words, limit: int = AUTHORS_IN_CONTENT) -> str:
    """``Authors: A, B, C`` with at most ``limit`` names, then ``and N more``."""
    names = ", ".join(authors[:limit])
    if len(authors) > limit:
        names = f"{names} {w.more(len(authors) - limit)}"
    return w.authors % {"names": names}


def entry_html(item: FeedItem, cfg: Config, w: Words | None = None) -> Markup:
    """The entry's whole summary as HTML; every piece of digest text is escaped.

    The title already links to arXiv in every reader; the Hugging Face page (also a
    ``related`` link, which readers rarely show) and the day's page get links of their own.
    The author line is there when the author elements leave some out.
    """
    w = w or words(cfg.language)
    paper, pick = item.paper, item.pick
    media = _media(paper)
    out = []
    if media is not None and media.kind == "image":
        out.append(f'<p><img src="{escape(media.url)}" alt="{escape(paper.title)}"></p>\n')
    elif media is not None:
        out.append(f'<p><a href="{escape(media.url)}">{escape(w.video)}</a></p>\n')
    date = w.date(pick.date)
    meta = w.day_rank % {"rank": pick.rank, "date": date}
    if pick.votes is not None:
        meta = f"{meta} · {w.votes(pick.votes)}"
    out.append(f"<p>{escape(meta)}</p>\n")
    if len(paper.authors) > MAX_AUTHORS:
        out.append(f"<p>{escape(byline(paper.authors, w))}</p>\n")
    out.append(points_html(paper.sections, w))
    hf, day = escape(paper.hf_url), escape(day_url(cfg, pick.date))
    papers_of = escape(w.papers_of % {"date": date})
    out.append(f'\n<p><a href="{hf}">{escape(w.hf_page)}</a> · <a href="{day}">{papers_of}</a></p>')
    return Markup("".join(out))


def _categories(item: FeedItem, cfg: Config) -> list[str]:
    """Category terms: the digest date and the daily top-N the paper was selected from."""
    return [item.pick.date.isoformat(), f"top-{cfg.top_n_daily}"]


# -- Atom ----------------------------------------------------------------------------------


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
    fg.title(_html_text(title))
    if subtitle:
        fg.subtitle(_html_text(subtitle))
    fg.language(cfg.language)
    fg.author({"name": plain(cfg.author_name)})
    fg.link(href=self_url, rel="self", type=ATOM_TYPE)
    fg.link(href=cfg.site_url, rel="alternate", type="text/html")
    fg.generator(GENERATOR, version=_VERSION or None)
    fg.updated(entries[0].time if entries else EPOCH)
    for entry in entries:
        fe = fg.add_entry(order="append")
        fe.id(entry.id)
        fe.title(_html_text(entry.title))
        fe.published(entry.time)
        fe.updated(entry.time)
        if entry.authors:
            fe.author([{"name": plain(name)} for name in entry.authors])
        if entry.categories:
            fe.category([{"term": term} for term in entry.categories])
        if entry.summary:
            fe.summary(_clean_html(entry.summary), type="html")
        fe.content(_clean_html(entry.content), type="html")
        fe.extras.links = entry.links
        fe.extras.thumbnail = entry.thumbnail
    data: bytes = fg.atom_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return data


def _summary_html(paper: Paper) -> str:
    return str(inline.to_html(paper.first_point()))


def atom_bytes(items: Sequence[FeedItem], cfg: Config) -> bytes:
    """The Atom 1.0 document of the daily top papers."""
    w = words(cfg.language)
    entries = []
    for item in items:
        paper = item.paper
        media = _media(paper)
        entries.append(
            AtomEntry(
                id=item.id,
                title=paper.title,
                time=item.time,
                content=entry_html(item, cfg, w),
                summary=_summary_html(paper),
                links=(
                    {"href": paper.url, "rel": "alternate", "type": "text/html"},
                    {
                        "href": paper.hf_url,
                        "rel": "related",
                        "type": "text/html",
                        "title": "Hugging Face",
                    },
                ),
                authors=tuple(_authors(paper)),
                categories=tuple(_categories(item, cfg)),
                thumbnail=media.url if media is not None and media.kind == "image" else None,
            )
        )
    return atom_document(
        cfg,
        feed_id=cfg.site_url,
        title=cfg.site_title,
        subtitle=cfg.site_subtitle,
        self_url=cfg.site_url + ATOM_NAME,
        entries=entries,
    )


# -- JSON Feed -----------------------------------------------------------------------------


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


def _json_item(item: FeedItem, cfg: Config, w: Words) -> str:
    paper = item.paper
    time = item.time.isoformat()
    data: dict[str, Any] = {"id": item.id, "url": paper.url, "external_url": paper.hf_url}
    data["title"] = paper.title
    if paper.first_point():
        data["summary"] = inline.to_text(paper.first_point())
    media = _media(paper)
    if media is not None and media.kind == "image":
        data["image"] = media.url
    data["date_published"] = time
    data["date_modified"] = time
    authors = _authors(paper)
    if authors:
        data["authors"] = [{"name": name} for name in authors]
    data["tags"] = _categories(item, cfg)
    if media is not None and media.kind == "video":
        mime = _VIDEO_TYPES.get(os.path.splitext(urlsplit(media.url).path)[1].lower())
        if mime:
            data["attachments"] = [{"url": media.url, "mime_type": mime}]
    html = json_html(str(entry_html(item, cfg, w)))
    return json_text(data)[:-1] + ',"content_html":' + html + "}"


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


def json_feed_bytes(items: Sequence[FeedItem], cfg: Config) -> bytes:
    """The JSON Feed 1.1 document of the daily top papers.

    Plain-text fields have ``<``, ``>`` and ``&`` escaped, so no digest text can read as
    markup even if the JSON ends up inside an HTML page.
    """
    w = words(cfg.language)
    return json_document(
        cfg,
        title=cfg.site_title,
        description=cfg.site_subtitle,
        feed_url=cfg.site_url + JSON_NAME,
        items=(_json_item(i, cfg, w) for i in items),
    )


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write a public file atomically unless it already holds exactly these bytes."""
    return write_file(path, data, mode=PUBLIC_FILE, if_changed=True)


def write_public(out: Path, files: Iterable[tuple[str, bytes]], what: str) -> list[Path]:
    """Write each ``(name, bytes)`` into the public folder ``out`` unless the file already
    holds those bytes. Returns the files that changed; ``what`` says what they hold, for
    the log."""
    public_folder(out)
    written = []
    for name, data in files:
        path = out / name
        if write_if_changed(path, data):
            written.append(path)
            log.info("wrote %s (%s, %d bytes)", path, what, len(data))
        else:
            log.info("%s unchanged", path)
    return written


def write_feeds(cfg: Config, archive: Archive, out_dir: Path | None = None) -> list[Path]:
    """Write ``feed.atom`` and ``feed.json`` into ``out_dir`` (default: the public folder).

    Returns the files that changed; files whose bytes would not change are left alone.
    """
    items = feed_entries(archive.digests, cfg)
    files = ((ATOM_NAME, atom_bytes(items, cfg)), (JSON_NAME, json_feed_bytes(items, cfg)))
    return write_public(out_dir or cfg.public_path, files, f"{len(items)} entries")
