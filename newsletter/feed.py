"""Atom and JSON Feed bytes from the daily top papers.

Pure functions of the archive and the settings: nothing here reads the clock, so the
same archive always gives the same bytes and a rebuild with no new digest leaves the
files (and their ETags) unchanged.

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
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup

from .config import Config
from .digest import clean_text
from .files import PUBLIC_FILE, public_folder
from .models import Archive, Digest, Media, Paper, Pick, Section
from .select import top_daily

log = logging.getLogger(__name__)

__all__ = [
    "ATOM_NAME",
    "ATOM_TYPE",
    "JSON_NAME",
    "JSON_TYPE",
    "FeedItem",
    "atom_bytes",
    "entry_html",
    "feed_entries",
    "json_feed_bytes",
    "tag_id",
    "write_feeds",
    "write_if_changed",
]

ATOM_NAME = "feed.atom"
JSON_NAME = "feed.json"
ATOM_TYPE = "application/atom+xml"
JSON_TYPE = "application/feed+json"
MEDIA_NS = "http://search.yahoo.com/mrss/"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "newsletter"
MAX_AUTHORS = 5
# Feeds carry no clock; an empty feed still needs an `updated`, and this one never moves.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}
# Characters XML 1.0 cannot carry; the parser already removed them from digest text.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# json.dumps leaves these as they are; escaped, the JSON can also sit inside an HTML page.
_LINE_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029"})
_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)

try:
    _VERSION = version("newsletter")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    _VERSION = ""


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
    tz, clock, domain = cfg.tz, cfg.feed_clock, cfg.tag_domain
    items = [
        FeedItem(
            pick,
            tag_id(domain, first_seen[pick.paper.arxiv_id].year, pick.paper.arxiv_id),
            dt.datetime.combine(pick.date, clock, tzinfo=tz),
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


def _text(text: str) -> str:
    """Plain text safe for XML: feedgen raises on control characters."""
    return clean_text(text)


def _points_html(sections: Sequence[Section]) -> Markup:
    """The summary points as (nested) lists, labels in bold."""
    # Markup % escapes its arguments; it is several times faster than Markup.format.
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
        if section.label:
            out.append(_LABELLED % (section.label, section.text))
        else:
            out.append(_POINT % section.text)
    if depth >= 0:
        out.append("</li>" + "</ul></li>" * depth + "</ul>")
    return Markup("".join(out))


_LABELLED = Markup("<li><strong>%s</strong>: %s")
_POINT = Markup("<li>%s")
_IMAGE = Markup('<p><img src="%s" alt="%s"></p>\n')
_VIDEO = Markup('<p><a href="%s">동영상 보기</a></p>\n')
_META = Markup("<p>%s 일간 %s위 · %s</p>\n")
_LINK = Markup('\n<p><a href="%s">Hugging Face에서 보기</a></p>')


def _authors(paper: Paper) -> list[str]:
    """The first ``MAX_AUTHORS`` authors.

    Papers with dozens or hundreds of authors are common; listing them all would make
    such an entry larger than a whole day of others and the feed too large to poll. The
    rest are not replaced by a made-up "and N more" author, which readers would show as
    a person; the arXiv link has the full list.
    """
    return list(paper.authors[:MAX_AUTHORS])


def _votes_text(votes: int | None) -> str:
    return "추천 수 없음" if votes is None else f"추천 {votes}"


def _date_text(day: dt.date) -> str:
    return f"{day.year}년 {day.month}월 {day.day}일"


def entry_html(item: FeedItem) -> Markup:
    """The entry's whole Korean summary as HTML; every piece of digest text is escaped.

    The title already links to arXiv in every reader; the Hugging Face page, which
    readers rarely show from a ``related`` link, gets a link of its own.
    """
    paper = item.paper
    media = _media(paper)
    html = Markup("")
    if media is not None and media.kind == "image":
        html += _IMAGE % (media.url, paper.title)
    elif media is not None:
        html += _VIDEO % media.url
    html += _META % (_date_text(item.pick.date), item.pick.rank, _votes_text(item.pick.votes))
    html += _points_html(paper.sections)
    return html + _LINK % paper.hf_url


def _categories(item: FeedItem, cfg: Config) -> list[str]:
    """Category terms: the digest date and the daily top-N the paper was selected from."""
    return [item.pick.date.isoformat(), f"top-{cfg.top_n_daily}"]


@functools.cache
def _extensions() -> tuple[type, type]:
    """The feedgen extensions, made on first use: feedgen and lxml are imported only by a
    process that writes a feed (a service start with its feeds current does not)."""
    from feedgen.ext.base import BaseEntryExtension, BaseExtension
    from feedgen.util import xml_elem
    from lxml.etree import CDATA

    class _AtomExtras(BaseExtension):  # type: ignore[misc]
        """Declares the Media RSS namespace on the feed element."""

        def extend_ns(self) -> dict[str, str]:
            return {"media": MEDIA_NS}

    class _AtomEntryExtras(BaseEntryExtension):  # type: ignore[misc]
        """Writes the entry links and thumbnail that feedgen 1.0.0 would write wrongly, and
        puts the HTML content in a CDATA section."""

        def __init__(self) -> None:
            self.links: list[dict[str, str]] = []
            self.thumbnail: str | None = None

        def extend_atom(self, entry: Any) -> Any:
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


def atom_bytes(items: Sequence[FeedItem], cfg: Config) -> bytes:
    """The Atom 1.0 document (UTF-8, ``xml:lang="ko"``) for ``items``."""
    site = cfg.site_url
    from feedgen.feed import FeedGenerator

    fg = FeedGenerator()
    fg.register_extension("extras", *_extensions(), atom=True, rss=False)
    fg.id(site)
    fg.title(_text(cfg.site_title))
    fg.subtitle(_text(cfg.site_subtitle))
    fg.language("ko")
    fg.author({"name": _text(cfg.author_name)})
    fg.link(href=site + ATOM_NAME, rel="self", type=ATOM_TYPE)
    fg.link(href=site, rel="alternate", type="text/html")
    fg.generator(GENERATOR, version=_VERSION or None)
    fg.updated(items[0].time if items else EPOCH)
    for item in items:
        paper = item.paper
        fe = fg.add_entry(order="append")
        fe.id(item.id)
        fe.title(_text(paper.title))
        fe.published(item.time)
        fe.updated(item.time)
        authors = _authors(paper)
        if authors:
            fe.author([{"name": _text(name)} for name in authors])
        fe.category([{"term": term} for term in _categories(item, cfg)])
        summary = _text(paper.first_point())
        if summary:
            fe.summary(summary)
        fe.content(_XML_INVALID.sub("", entry_html(item)), type="html")
        fe.extras.links = [
            {"href": paper.url, "rel": "alternate", "type": "text/html"},
            {"href": paper.hf_url, "rel": "related", "type": "text/html", "title": "Hugging Face"},
        ]
        media = _media(paper)
        if media is not None and media.kind == "image":
            fe.extras.thumbnail = media.url
    data: bytes = fg.atom_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return data


def _json(value: Any) -> str:
    """Compact JSON from the C encoder, with ``<``, ``>`` and ``&`` escaped as well."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_JSON_ESCAPES)


def _json_item(item: FeedItem, cfg: Config) -> str:
    paper = item.paper
    time = item.time.isoformat()
    data: dict[str, Any] = {"id": item.id, "url": paper.url, "external_url": paper.hf_url}
    data["title"] = paper.title
    if paper.first_point():
        data["summary"] = paper.first_point()
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
    # The HTML is markup built here with every piece of digest text already escaped;
    # escaping its own tags again as \u003c would only make it larger.
    html = json.dumps(str(entry_html(item)), ensure_ascii=False).translate(_LINE_SEPARATORS)
    return _json(data)[:-1] + ',"content_html":' + html + "}"


def json_feed_bytes(items: Sequence[FeedItem], cfg: Config) -> bytes:
    """The JSON Feed 1.1 document for ``items``: UTF-8, one item a line.

    Plain-text fields have ``<``, ``>`` and ``&`` escaped, so no digest text can read as
    markup even if the JSON ends up inside an HTML page.
    """
    site = cfg.site_url
    head = {
        "version": JSON_FEED_VERSION,
        "title": cfg.site_title,
        "home_page_url": site,
        "feed_url": site + JSON_NAME,
        "description": cfg.site_subtitle,
        "language": "ko",
        "authors": [{"name": cfg.author_name}],
    }
    lines = [_json(head)[:-1] + ',"items":[', ",\n".join(_json_item(i, cfg) for i in items), "]}\n"]
    return "\n".join(lines).encode("utf-8")


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically (temporary file, fsync, rename) unless ``path`` already
    holds exactly these bytes; an untouched file keeps its mtime and so its ETag."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, PUBLIC_FILE)  # mkstemp makes 0600; the web server may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_feeds(cfg: Config, archive: Archive, out_dir: Path | None = None) -> list[Path]:
    """Write ``feed.atom`` and ``feed.json`` into ``out_dir`` (default: the public folder).

    Returns the files that changed; files whose bytes would not change are left alone.
    """
    out = cfg.public_path if out_dir is None else out_dir
    items = feed_entries(archive.digests, cfg)
    public_folder(out)
    written = []
    for name, data in (
        (ATOM_NAME, atom_bytes(items, cfg)),
        (JSON_NAME, json_feed_bytes(items, cfg)),
    ):
        path = out / name
        if write_if_changed(path, data):
            written.append(path)
            log.info("wrote %s (%d entries, %d bytes)", path, len(items), len(data))
        else:
            log.info("%s unchanged", path)
    return written
