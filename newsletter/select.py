"""Top-voted selection: pure functions over parsed digests; "now" is always passed in."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.models import Archive, Digest, Pick

__all__ = ["IsoWeek", "rank", "top_daily", "top_weekly", "weekly_picks"]

_WEEK_RE = re.compile(r"(\d{4})-?W(\d{1,2})$", re.IGNORECASE)


@dataclass(frozen=True, order=True, slots=True)
class IsoWeek:
    """An ISO 8601 week (Monday to Sunday), written ``2024-W05``.

    ISO weeks, not locale weeks: Babel's ko_KR calendar starts weeks on Sunday.
    """

    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        match = _WEEK_RE.match(text.strip())
        if match is None:
            raise ValueError(f"not an ISO week: {text!r} (expected e.g. 2024-W05)")
        year, week = int(match.group(1)), int(match.group(2))
        try:
            dt.date.fromisocalendar(year, week, 1)
        except ValueError:
            raise ValueError(f"{year} has no ISO week {week}") from None
        return cls(year, week)

    @classmethod
    def of(cls, day: dt.date) -> IsoWeek:
        year, week, _ = day.isocalendar()
        return cls(year, week)

    @classmethod
    def previous(cls, now: dt.datetime, tz: ZoneInfo) -> IsoWeek:
        """The last complete week before ``now`` in ``tz``."""
        return cls.of(now.astimezone(tz).date() - dt.timedelta(days=7))

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 1)

    @property
    def sunday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 7)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.monday <= day <= self.sunday

    def __str__(self) -> str:
        return f"{self.year}-W{self.week:02d}"


def _key(pick: Pick) -> tuple[bool, int, int, dt.date, str]:
    # Known votes first, most first; then file position, date and id for a total order.
    return (
        pick.votes is None,
        -(pick.votes or 0),
        pick.position,
        pick.date,
        pick.paper.arxiv_id,
    )


def rank(picks: Iterable[Pick], n: int | None = None) -> list[Pick]:
    """Order picks by votes and number them from 1; keep the first ``n``."""
    ordered = sorted(picks, key=_key)
    if n is not None:
        ordered = ordered[: max(n, 0)]
    return [Pick(p.paper, p.date, p.position, p.votes, rank=i) for i, p in enumerate(ordered, 1)]


def top_daily(digest: Digest, n: int) -> list[Pick]:
    """The ``n`` most-voted papers of one day."""
    return rank(
        (Pick(paper, digest.date, i, paper.votes) for i, paper in enumerate(digest.papers)), n
    )


def weekly_picks(digests: Iterable[Digest]) -> list[Pick]:
    """Each paper once: its first date and position, and the highest votes it had."""
    seen: dict[str, Pick] = {}
    for digest in sorted(digests, key=lambda d: d.date):
        for position, paper in enumerate(digest.papers):
            first = seen.get(paper.arxiv_id)
            if first is None:
                seen[paper.arxiv_id] = Pick(paper, digest.date, position, paper.votes)
            elif paper.votes is not None and (first.votes is None or paper.votes > first.votes):
                # The first appearance stays the paper's identity; later days only add votes.
                seen[paper.arxiv_id] = Pick(first.paper, first.date, first.position, paper.votes)
    return list(seen.values())


def in_week(digests: Iterable[Digest], week: IsoWeek) -> list[Digest]:
    return [d for d in digests if d.date in week]


def top_weekly(digests: Iterable[Digest], week: IsoWeek, n: int) -> list[Pick]:
    """The ``n`` most-voted papers of an ISO week, each paper counted once."""
    return rank(weekly_picks(in_week(digests, week)), n)


# --- the weekly issue ------------------------------------------------------------------------


class NoIssueError(NewsletterError):
    """A week without digests: there is nothing to send, and no empty email is built."""


@dataclass(frozen=True, slots=True)
class WeekIssue:
    """One week's issue as selected: the week and its ranked papers (never empty)."""

    week: IsoWeek
    picks: tuple[Pick, ...]


def issue_weeks(archive: Archive) -> list[IsoWeek]:
    """Every ISO week that has at least one digest, oldest first."""
    return sorted({IsoWeek.of(d.date) for d in archive.digests if d.papers})


def latest_week(archive: Archive) -> IsoWeek:
    weeks = issue_weeks(archive)
    if not weeks:
        raise NoIssueError("the archive has no digests: there is no issue to render")
    return weeks[-1]


def build_issue(cfg: Config, archive: Archive, week: IsoWeek) -> WeekIssue:
    """The week's top ``cfg.top_n_weekly`` papers; :class:`NoIssueError` when it has none."""
    picks = top_weekly(archive.digests, week, cfg.top_n_weekly)
    if not picks:
        raise NoIssueError(
            f"no digests in week {week} ({week.monday} to {week.sunday}): no issue to send"
        )
    return WeekIssue(week, tuple(picks))
