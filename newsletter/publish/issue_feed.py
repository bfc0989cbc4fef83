"""The issues feed: ``issues.atom`` and ``issues.json``, one entry per weekly issue.

For readers who would rather have the weekly issue in their feed reader than by email,
named and introduced as the email's edition in the feed's language.
Each entry is a finished week's issue, the same selection as the email and its web copy,
as a plain HTML fragment (``templates/feed/issue.html``: headings, links, lists, no
styles) that any reader shows as it is; it links to the issue's web copy. Like the daily
feed, nothing here reads the clock: ``today`` says which weeks are finished, and the same
archive always gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from newsletter.config import Config
from newsletter.models import Archive
from newsletter.publish import latex
from newsletter.publish.atom import AtomEntry, atom_document
from newsletter.publish.feed_content import AUTHORS_IN_CONTENT, Words, byline, points_html, words
from newsletter.publish.json_feed import json_document, json_html, json_text
from newsletter.publish.names import ISSUES_ATOM_NAME, ISSUES_JSON_NAME
from newsletter.publish.public_files import write_public
from newsletter.publish.render import environment, lead_line, web_copy_url
from newsletter.select import IsoWeek, NoIssueError, WeekIssue, build_issue, issue_weeks

log = logging.getLogger(__name__)

__all__ = [
    "ISSUES_SHOWN",
    "IssueItem",
    "feed_weeks",
    "issue_entries",
    "issues_atom_bytes",
    "issues_json_bytes",
    "write_issue_feeds",
]

# The latest finished weeks the feed holds: about ten papers each.
ISSUES_SHOWN = 10
_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(frozen=True, slots=True)
class IssueItem:
    """One entry: the issue, its permanent id, its time and its web copy."""

    issue: WeekIssue
    id: str
    time: dt.datetime
    url: str

    @property
    def week(self) -> IsoWeek:
        return self.issue.week


def feed_weeks(weeks: Iterable[IsoWeek], today: dt.date) -> list[IsoWeek]:
    """The ``ISSUES_SHOWN`` latest of ``weeks`` that are over by ``today``, newest first:
    a week still under way has no issue yet, and its web copy is not written."""
    return sorted((w for w in weeks if w.sunday < today), reverse=True)[:ISSUES_SHOWN]


def issue_id(domain: str, week: IsoWeek) -> str:
    """The permanent entry id: ``tag:example.org,2024:issue:2024-W31``."""
    return f"tag:{domain},{week.year}:issue:{week}"


def issue_time(cfg: Config, week: IsoWeek) -> dt.datetime:
    """When the issue goes out: ``schedule.weekly_at`` (``mon 08:00``) after the week."""
    day, at = cfg.schedule.weekly_at.split()
    hour, minute = (int(part) for part in at.split(":"))
    sent = week.sunday + dt.timedelta(days=_DAYS[day] + 1)
    return dt.datetime.combine(sent, dt.time(hour, minute), tzinfo=cfg.tz)


def issue_entries(cfg: Config, archive: Archive, today: dt.date) -> list[IssueItem]:
    """The issues of the feed, newest first."""
    items = []
    for week in feed_weeks(issue_weeks(archive), today):
        try:
            issue = build_issue(cfg, archive, week)
        except NoIssueError:  # pragma: no cover - issue_weeks has only weeks with papers
            continue
        items.append(
            IssueItem(
                latex.shown_issue(issue),
                issue_id(cfg.tag_domain, week),
                issue_time(cfg, week),
                web_copy_url(cfg, week, cfg.language),
            )
        )
    return items


@dataclass(frozen=True, slots=True)
class _PaperView:
    rank: int
    title: str
    url: str
    hf_url: str
    meta: str
    points: Markup


def issue_html(cfg: Config, issue: WeekIssue, w: Words) -> str:
    """The issue as a plain HTML fragment: ranks, linked titles, votes, authors and the
    summaries (labels translated, their own inline Markdown rendered, all else escaped)."""
    papers = []
    for pick in issue.picks:
        paper = pick.paper
        meta = []
        if pick.votes is not None:
            meta.append(w.votes(pick.votes))
        if paper.authors:
            meta.append(byline(paper.authors, w, AUTHORS_IN_CONTENT))
        papers.append(
            _PaperView(
                pick.rank,
                paper.title,
                paper.url,
                paper.hf_url,
                " · ".join(meta),
                points_html(paper.sections, w),
            )
        )
    template = environment(w.lang).get_template("feed/issue.html")
    return template.render(week=issue.week, papers=papers)


def _week_label(w: Words, week: IsoWeek) -> str:
    return w.gettext("Week %(week)d, %(year)d") % {"week": week.week, "year": week.year}


def issues_atom_bytes(items: Sequence[IssueItem], cfg: Config) -> bytes:
    """The Atom 1.0 document of the weekly issues."""
    w = words(cfg.language)
    entries = [
        AtomEntry(
            id=item.id,
            title=_week_label(w, item.week),
            time=item.time,
            content=issue_html(cfg, item.issue, w),
            summary=html.escape(lead_line(w.lang, item.issue), quote=False),
            links=({"href": item.url, "rel": "alternate", "type": "text/html"},),
        )
        for item in items
    ]
    edition = cfg.email.edition(cfg.language)
    return atom_document(
        cfg,
        feed_id=cfg.site_url + ISSUES_ATOM_NAME,
        title=edition.name,
        subtitle=edition.intro,
        self_url=cfg.site_url + ISSUES_ATOM_NAME,
        entries=entries,
    )


def _json_item(item: IssueItem, cfg: Config, w: Words) -> str:
    time = item.time.isoformat()
    data: dict[str, Any] = {
        "id": item.id,
        "url": item.url,
        "title": _week_label(w, item.week),
        "summary": lead_line(w.lang, item.issue),
        "date_published": time,
        "date_modified": time,
    }
    html = json_html(issue_html(cfg, item.issue, w))
    return json_text(data)[:-1] + ',"content_html":' + html + "}"


def issues_json_bytes(items: Sequence[IssueItem], cfg: Config) -> bytes:
    """The JSON Feed 1.1 document of the weekly issues."""
    w = words(cfg.language)
    edition = cfg.email.edition(cfg.language)
    return json_document(
        cfg,
        title=edition.name,
        description=edition.intro,
        feed_url=cfg.site_url + ISSUES_JSON_NAME,
        items=[_json_item(item, cfg, w) for item in items],
    )


def write_issue_feeds(
    cfg: Config, archive: Archive, today: dt.date, out_dir: Path | None = None
) -> list[Path]:
    """Write ``issues.atom`` and ``issues.json`` into ``out_dir`` (default: the public
    folder) from the weeks finished by ``today``. Returns the files that changed; files
    whose bytes would not change are left alone."""
    items = issue_entries(cfg, archive, today)
    files = (
        (ISSUES_ATOM_NAME, issues_atom_bytes(items, cfg)),
        (ISSUES_JSON_NAME, issues_json_bytes(items, cfg)),
    )
    return write_public(out_dir or cfg.public_path, files, f"{len(items)} issues")
