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
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem
from markupsafe import Markup

from .config import Config
from .digest import clean_text
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
ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_NS = "http://search.yahoo.com/mrss/"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "newsletter"
MAX_AUTHORS = 10
# Feeds carry no clock; an empty feed still needs an `updated`, and this one never moves.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}
# json.dumps leaves these as they are; escaped, the JSON can also sit inside an HTML page.
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
    chosen: dict[str, Pick] = {}
    for digest in ordered:
        for paper in digest.papers:
            first_seen.setdefault(paper.arxiv_id, digest.date)
        for pick in top_daily(digest, cfg.top_n_daily):
            chosen.setdefault(pick.paper.arxiv_id, pick)
    tz, clock, domain = cfg.tz, cfg.feed_clock, cfg.tag_domain
    items = [
        FeedItem(
            pick,
            tag_id(domain, first_seen[pick.paper.arxiv_id].year, pick.paper.arxiv_id),
            dt.datetime.combine(pick.date, clock, tzinfo=tz),
        )
        for pick in chosen.values()
        if pick.date >= start
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
    out: list[Markup] = []
    depth = -1
    for section in sections:
        level = min(section.level, depth + 1)  # never open two levels at once
        if level > depth:
            out.append(Markup("<ul>"))
            depth = level
        else:
            out.append(Markup("</li>"))
            while depth > level:
                out.append(Markup("</ul></li>"))
                depth -= 1
        if section.label:
            out.append(Markup("<li><strong>{}</strong>: {}").format(section.label, section.text))
        else:
            out.append(Markup("<li>{}").format(section.text))
    if depth >= 0:
        out.append(Markup("</li>"))
        out.extend(Markup("</ul></li>") for _ in range(depth))
        out.append(Markup("</ul>"))
    return Markup("").join(out)


def _authors(paper: Paper) -> list[str]:
    """The first ``MAX_AUTHORS`` authors, then ``외 N명`` for the rest.

    Papers with hundreds of authors exist; listing them all would make one entry
    larger than a whole day of others and push the feed past its size budget.
    """
    if len(paper.authors) <= MAX_AUTHORS:
        return list(paper.authors)
    rest = len(paper.authors) - MAX_AUTHORS
    return [*paper.authors[:MAX_AUTHORS], f"외 {rest}명"]


def _votes_text(votes: int | None) -> str:
    return "추천 수 없음" if votes is None else f"추천 {votes}"


def _date_text(day: dt.date) -> str:
    return f"{day.year}년 {day.month}월 {day.day}일"


def entry_html(item: FeedItem) -> Markup:
    """The entry's whole Korean summary as HTML; every piece of digest text is escaped."""
    paper = item.paper
    parts: list[Markup] = []
    media = _media(paper)
    if media is not None and media.kind == "image":
        parts.append(Markup('<p><img src="{}" alt="{}"></p>').format(media.url, paper.title))
    elif media is not None:
        parts.append(Markup('<p><a href="{}">동영상 보기</a></p>').format(media.url))
    parts.append(
        Markup("<p>{} 일간 {}위 · {}</p>").format(
            _date_text(item.pick.date), item.pick.rank, _votes_text(item.pick.votes)
        )
    )
    if paper.sections:
        parts.append(_points_html(paper.sections))
    parts.append(
        Markup('<p><a href="{}">arXiv</a> · <a href="{}">Hugging Face</a></p>').format(
            paper.url, paper.hf_url
        )
    )
    return Markup("\n").join(parts)


def _categories(item: FeedItem, cfg: Config) -> list[tuple[str, str]]:
    """(term, label) pairs: the digest date and the daily top-N it was selected from."""
    day = item.pick.date
    return [
        (day.isoformat(), _date_text(day)),
        (f"top-{cfg.top_n_daily}", f"일간 상위 {cfg.top_n_daily}"),
    ]


class _AtomExtras(BaseExtension):  # type: ignore[misc]
    """Declares the Media RSS namespace on the feed element."""

    def extend_ns(self) -> dict[str, str]:
        return {"media": MEDIA_NS}


class _AtomEntryExtras(BaseEntryExtension):  # type: ignore[misc]
    """Writes the entry links and thumbnail that feedgen 1.0.0 would write wrongly."""

    def __init__(self) -> None:
        self.links: list[dict[str, str]] = []
        self.thumbnail: str | None = None

    def extend_atom(self, entry: Any) -> Any:
        for link in self.links:
            xml_elem("link", entry, **link)
        if self.thumbnail is not None:
            xml_elem(f"{{{MEDIA_NS}}}thumbnail", entry, url=self.thumbnail)
        return entry


def atom_bytes(items: Sequence[FeedItem], cfg: Config) -> bytes:
    """The Atom 1.0 document (UTF-8, ``xml:lang="ko"``) for ``items``."""
    site = cfg.site_url
    fg = FeedGenerator()
    fg.register_extension("extras", _AtomExtras, _AtomEntryExtras, atom=True, rss=False)
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
        fe.category([{"term": term, "label": label} for term, label in _categories(item, cfg)])
        summary = _text(paper.first_point())
        if summary:
            fe.summary(summary)
        fe.content(_text_html(entry_html(item)), type="html")
        fe.extras.links = [
            {"href": paper.url, "rel": "alternate", "type": "text/html"},
            {"href": paper.hf_url, "rel": "related", "type": "text/html", "title": "Hugging Face"},
        ]
        media = _media(paper)
        if media is not None and media.kind == "image":
            fe.extras.thumbnail = media.url
    data: bytes = fg.atom_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return data


def _text_html(html: Markup) -> str:
    # Newlines are kept; only control characters that XML cannot carry are removed.
    return "\n".join(clean_text(line) for line in str(html).split("\n"))


def _json_item(item: FeedItem, cfg: Config) -> dict[str, Any]:
    paper = item.paper
    time = item.time.isoformat()
    data: dict[str, Any] = {
        "id": item.id,
        "url": paper.url,
        "external_url": paper.hf_url,
        "title": paper.title,
        "content_html": str(entry_html(item)),
    }
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
    data["tags"] = [term for term, _ in _categories(item, cfg)]
    if media is not None and media.kind == "video":
        mime = _VIDEO_TYPES.get(os.path.splitext(urlsplit(media.url).path)[1].lower())
        if mime:
            data["attachments"] = [{"url": media.url, "mime_type": mime}]
    return data


def json_feed_bytes(items: Sequence[FeedItem], cfg: Config) -> bytes:
    """The JSON Feed 1.1 document for ``items`` (UTF-8, ``<``, ``>``, ``&`` escaped)."""
    site = cfg.site_url
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": cfg.site_title,
        "home_page_url": site,
        "feed_url": site + JSON_NAME,
        "description": cfg.site_subtitle,
        "language": "ko",
        "authors": [{"name": cfg.author_name}],
        "items": [_json_item(item, cfg) for item in items],
    }
    text = json.dumps(feed, ensure_ascii=False, indent=1).translate(_JSON_ESCAPES)
    return (text + "\n").encode("utf-8")


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
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the web server may run as another user
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
    out.mkdir(parents=True, exist_ok=True)
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
