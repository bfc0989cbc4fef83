"""The daily feed: Atom and JSON Feed bytes of the daily top papers.

Pure functions of the archive and the settings: nothing here reads the clock, so the
same archive always gives the same bytes and a rebuild with no new digest leaves the
files (and their ETags) unchanged.

The feeds are in ``cfg.language``: their ``xml:lang``, the section labels and the words
around the summaries (:mod:`newsletter.publish.feed_content`). Each entry of a day has its
own time, a second apart from ``feed_time`` on, rank 1 the newest, so a reader sorting by
date keeps the ranking (:func:`entry_time`). The documents themselves are written by
:mod:`newsletter.publish.atom` and :mod:`newsletter.publish.json_feed`, their text made
warning-free in the W3C Feed Validation Service by :mod:`newsletter.publish.feed_text`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup, escape

from newsletter.config import Config
from newsletter.models import Archive, Digest, Media, Paper, Pick
from newsletter.publish import inline, latex
from newsletter.publish.atom import AtomEntry, atom_document
from newsletter.publish.feed_content import Words, byline, points_html, words
from newsletter.publish.feed_text import plain
from newsletter.publish.json_feed import json_document, json_html, json_text
from newsletter.publish.names import ATOM_NAME, JSON_NAME
from newsletter.publish.public_files import write_if_changed, write_public
from newsletter.select import top_daily

__all__ = [
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

# Author elements per entry. Papers with dozens or hundreds of authors are common; the
# rest are named in the content, never as a made-up "and N more" author.
MAX_AUTHORS = 5
_VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}


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
            latex.shown_pick(pick),
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


def _authors(paper: Paper) -> list[str]:
    """The first ``MAX_AUTHORS`` authors, for the author elements; the content names the
    others (:func:`byline`)."""
    return list(paper.authors[:MAX_AUTHORS])


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


# -- Atom and JSON Feed --------------------------------------------------------------------


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


def write_feeds(cfg: Config, archive: Archive, out_dir: Path | None = None) -> list[Path]:
    """Write ``feed.atom`` and ``feed.json`` into ``out_dir`` (default: the public folder).

    Returns the files that changed; files whose bytes would not change are left alone.
    """
    items = feed_entries(archive.digests, cfg)
    files = ((ATOM_NAME, atom_bytes(items, cfg)), (JSON_NAME, json_feed_bytes(items, cfg)))
    return write_public(out_dir or cfg.public_path, files, f"{len(items)} entries")
