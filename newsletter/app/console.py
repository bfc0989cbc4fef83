"""What the editor's console shows: the dashboard, a send as it goes, the issues, the list
searched and exported, the reports, and the series its charts draw.

Each function takes the :class:`Store` (and ``now`` where time matters) and returns frozen
dataclasses the pages render; none of them writes. Times given as ``now`` may be in any
zone: days of :func:`subscribers_over_time` are that zone's days.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from newsletter.app.console_list import (
    MAX_PAGE,
    SubscriberPage,
    export_filtered,
    find_subscribers,
    in_utc,
    subscribers_over_time,
)
from newsletter.app.status import Rates, rates
from newsletter.config import LANGS
from newsletter.errors import NewsletterError
from newsletter.store import (
    SUBSCRIBER_STATUSES,
    DeliveryTally,
    Issue,
    ReportRow,
    Store,
    Unmatched,
    UnmatchedReport,
    WriterDay,
)

__all__ = [
    "ConsoleError",
    "Dashboard",
    "IssueDeliveries",
    "IssueRow",
    "Live",
    "Reports",
    "SubscriberPage",
    "dashboard",
    "export_filtered",
    "find_subscribers",
    "issue_deliveries",
    "issue_rows",
    "live",
    "recent_reports",
    "subscribers_over_time",
]

log = logging.getLogger(__name__)

# The pace of a send is what it did over the last minute.
PACE_WINDOW = dt.timedelta(seconds=60)


class ConsoleError(NewsletterError):
    """Something the console was asked for that does not exist or cannot be."""


# --- a send as it goes ------------------------------------------------------------------


@dataclass(frozen=True)
class Live:
    """An issue's deliveries at ``at``: by state, what came back, and the pace.

    ``rate``: messages handed to a server per second over the last minute (from the
    first of them: a send that began or resumed within it is not slow). ``seconds_left``: what still
    waits (queued or being sent) at that rate; 0 when nothing waits, None while the rate
    is unknown (nothing sent in the last minute)."""

    issue_id: int
    week: str
    status: str
    paused_by: str | None
    resume_at: dt.datetime | None
    total: int
    queued: int
    sending: int
    sent: int
    failed: int
    skipped: int
    bounced: int
    complained: int
    rate: float
    seconds_left: float | None
    at: dt.datetime
    reports: dict[str, int] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        return self.queued + self.sending

    @property
    def rates(self) -> Rates | None:
        """Bounces and complaints as shares of what was handed over (None: nothing yet)."""
        return rates({"sent": self.sent, "failed": self.failed}, self.reports)

    @property
    def done(self) -> bool:
        """Whether polling can stop: the issue is finished, cancelled, or nothing waits."""
        return self.status in ("sent", "cancelled") or (self.total > 0 and not self.waiting)

    def as_json(self) -> dict[str, Any]:
        """The numbers for the page that polls during a send (plain JSON types)."""
        found = self.rates
        return {
            "issue": self.issue_id,
            "week": self.week,
            "status": self.status,
            "paused_by": self.paused_by,
            "resume_at": None if self.resume_at is None else self.resume_at.isoformat(),
            "total": self.total,
            "queued": self.queued,
            "sending": self.sending,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
            "bounced": self.bounced,
            "complained": self.complained,
            "rate": round(self.rate, 2),
            "seconds_left": None if self.seconds_left is None else round(self.seconds_left),
            "bounce_rate": None if found is None else round(found.bounce, 5),
            "complaint_rate": None if found is None else round(found.complaint, 5),
            "done": self.done,
            "at": self.at.isoformat(),
        }


def _pace(store: Store, issue_id: int, now: dt.datetime) -> float:
    """Messages per second over the last minute: those handed over in it, over the time
    from the first of them to ``now`` (a send that started or resumed within the minute
    is not taken for a slow one)."""
    pace = store.send_pace(issue_id, now - PACE_WINDOW)
    if not pace.sent or pace.first is None:
        return 0.0
    return pace.sent / max((now - pace.first).total_seconds(), 1.0)


def _live(issue: Issue, tally: DeliveryTally, rate: float, now: dt.datetime) -> Live:
    states = tally.states
    waiting = states.get("queued", 0) + states.get("sending", 0)
    left = 0.0 if not waiting else (waiting / rate if rate > 0 else None)
    return Live(
        issue_id=issue.id,
        week=issue.week,
        status=issue.status,
        paused_by=issue.paused_by,
        resume_at=issue.resume_at,
        total=tally.total,
        queued=states.get("queued", 0),
        sending=states.get("sending", 0),
        sent=states.get("sent", 0),
        failed=states.get("failed", 0),
        skipped=states.get("skipped", 0),
        bounced=tally.bounced,
        complained=tally.complained,
        rate=rate,
        seconds_left=left,
        at=now,
        reports=dict(tally.reports),
    )


def live(store: Store, issue_id: int, now: dt.datetime) -> Live:
    """Where issue ``issue_id``'s send is at ``now``: three queries, the tally of the issue's
    deliveries by state reading every one of them (on 90,000: 8 ms on SQLite, 21 ms on
    PostgreSQL, by bench/console.py). :class:`ConsoleError` when there is no such issue."""
    issue = store.get_issue_by_id(issue_id)
    if issue is None:
        raise ConsoleError(f"no issue with id {issue_id}")
    now = in_utc(now)
    return _live(issue, store.delivery_tally(issue_id), _pace(store, issue_id, now), now)


# --- the dashboard and the issues --------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    """The latest issue (None: none yet) and its send, its rates (None: nothing handed
    over yet), the list by state and by language (every state and language of the
    settings, zeros included), the writer's latest days (newest first), and the reports by
    mail that acted on nobody."""

    issue: Issue | None
    live: Live | None
    rates: Rates | None
    subscribers: dict[str, int]
    languages: dict[str, int]
    writer_days: list[WriterDay]
    unmatched: Unmatched
    at: dt.datetime


def _with_zeros(found: dict[str, int], keys: Iterable[str]) -> dict[str, int]:
    return {**dict.fromkeys(keys, 0), **found}


def dashboard(store: Store, now: dt.datetime) -> Dashboard:
    """What the console's first page shows at ``now``."""
    now = in_utc(now)
    issue = store.latest_issue()
    current = None
    if issue is not None:
        tally = store.delivery_tally(issue.id)
        current = _live(issue, tally, _pace(store, issue.id, now), now)
    states: dict[str, int] = {}
    langs: dict[str, int] = {}
    for (lang, state), count in store.count_by_lang_and_state().items():
        states[state] = states.get(state, 0) + count
        langs[lang] = langs.get(lang, 0) + count
    return Dashboard(
        issue=issue,
        live=current,
        rates=None if current is None else current.rates,
        subscribers=_with_zeros(states, SUBSCRIBER_STATUSES),
        languages=_with_zeros(langs, LANGS),
        writer_days=store.writer_days(),
        unmatched=store.unmatched(),
        at=now,
    )


@dataclass(frozen=True)
class IssueRow:
    """An issue with its deliveries by state (every state, zeros included), how many
    bounced and complained, and its rates (None: nothing handed over)."""

    issue: Issue
    counts: dict[str, int]
    bounced: int
    complained: int
    rates: Rates | None

    @property
    def week(self) -> str:
        return self.issue.week

    @property
    def status(self) -> str:
        return self.issue.status

    @property
    def paused_by(self) -> str | None:
        return self.issue.paused_by

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def issue_rows(store: Store) -> list[IssueRow]:
    """Every issue, newest week first, its deliveries counted in one grouped statement."""
    tallies = store.delivery_tallies()
    found = []
    for issue in store.list_issues():
        tally = tallies.get(issue.id) or DeliveryTally.empty()
        found.append(
            IssueRow(
                issue=issue,
                counts=dict(tally.states),
                bounced=tally.bounced,
                complained=tally.complained,
                rates=rates(tally.states, tally.reports),
            )
        )
    return found


@dataclass(frozen=True)
class IssueDeliveries:
    """One bar of the deliveries chart: an issue's messages handed over (``sent``), given
    up (``failed``), not sent (``skipped``), and what came back (bounces, complaints)."""

    issue_id: int
    week: str
    status: str
    total: int
    sent: int
    failed: int
    skipped: int
    bounced: int
    complained: int


def issue_deliveries(store: Store, limit: int = 26) -> list[IssueDeliveries]:
    """The latest ``limit`` issues that have deliveries, oldest first (a chart's order)."""
    tallies = store.delivery_tallies()
    found = []
    for issue in store.list_issues():
        tally = tallies.get(issue.id)
        if tally is None or not tally.total:
            continue
        states = tally.states
        found.append(
            IssueDeliveries(
                issue_id=issue.id,
                week=issue.week,
                status=issue.status,
                total=tally.total,
                sent=states.get("sent", 0),
                failed=states.get("failed", 0),
                skipped=states.get("skipped", 0),
                bounced=tally.bounced,
                complained=tally.complained,
            )
        )
        if len(found) >= max(limit, 1):
            break
    return found[::-1]


# --- reports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reports:
    """The latest reports acted on (newest first, with what each did to its subscriber),
    the latest that acted on nobody, and how many of those there are in all."""

    acted: list[ReportRow]
    unmatched: list[UnmatchedReport]
    unmatched_total: int


def recent_reports(store: Store, limit: int = 100) -> Reports:
    """The latest ``limit`` reports of each kind."""
    limit = min(max(limit, 1), MAX_PAGE)
    return Reports(
        acted=store.recent_reports(limit),
        unmatched=store.unmatched_reports(limit),
        unmatched_total=store.unmatched().count,
    )
