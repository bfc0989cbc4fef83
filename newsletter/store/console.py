"""What the editor's console reads: the list searched and paged, each issue's deliveries
tallied, a send's pace, the reports, and the list's size over time.

Every query here is one statement (or a few in one connection) whose cost does not grow
with the page asked for: pages are keyset (``id > after``), never OFFSET, and the counts
of a send read indexes only (revision 0014).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from newsletter.store.base import StoreBase, Subscriber, _aware, _subscriber
from newsletter.store.subscribers import matching
from newsletter.store.tables import (
    DELIVERY_STATUSES,
    bounce_events,
    deliveries,
    issues,
    subscribers,
    unmatched_reports,
)

log = logging.getLogger(__name__)

_COUNT = sa.func.count().label("n")
_RECIPIENT: sa.ColumnClause[str] = sa.literal_column("'recipient'", sa.String())


@dataclass(frozen=True, slots=True)
class DeliveryTally:
    """An issue's deliveries by state (every state of :data:`DELIVERY_STATUSES`), and by
    what came back for them (``reports``: hard, soft, complaint, unsubscribe, blocked, and
    ``refused`` for an address refused during the SMTP dialogue, counted once, as
    :meth:`ReportQueries.bounce_counts` counts them)."""

    states: dict[str, int]
    reports: dict[str, int]

    @classmethod
    def empty(cls) -> DeliveryTally:
        """An issue with no deliveries (yet)."""
        return cls(dict.fromkeys(DELIVERY_STATUSES, 0), {})

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def bounced(self) -> int:
        """Deliveries that bounced: refused at once, or reported hard or soft later."""
        found = self.reports
        return found.get("hard", 0) + found.get("soft", 0) + found.get("refused", 0)

    @property
    def complained(self) -> int:
        return self.reports.get("complaint", 0)


@dataclass(frozen=True, slots=True)
class SendPace:
    """How fast an issue is going out: how many of its messages were handed over from
    ``since`` on, and when the first of those was (None: none)."""

    since: dt.datetime
    sent: int
    first: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """A report acted on, with its subscriber's address and the week of the issue whose
    delivery it answered (None: a single mail's, or none named)."""

    id: int
    created_at: dt.datetime
    subscriber_id: int
    email: str
    kind: str
    status_code: str | None
    diagnostic: str | None
    source: str
    action: str
    delivery_id: int | None
    week: str | None


@dataclass(frozen=True, slots=True)
class UnmatchedReport:
    """A report by mail that acted on nobody: the addresses it named, as it named them."""

    id: int
    created_at: dt.datetime
    report_id: str
    kind: str
    addresses: str
    diagnostic: str | None


def _epoch(dialect: str, column: Any) -> Any:
    """Seconds since 1970 of a stored time, in the database."""
    if dialect == "postgresql":
        return sa.func.extract("epoch", column)
    # SQLite stores times as UTC text, which julianday() reads.
    return (sa.func.julianday(column) - 2440587.5) * 86400.0


def _bucket(dialect: str, column: Any, start: float, end: float, width: float) -> Any:
    """Which step a time falls in: -1 before ``start``, NULL from ``end`` on (or no time)."""
    seconds = _epoch(dialect, column)
    step = (seconds - start) / width
    # Non-negative here: SQLite's CAST truncates, which is the floor; PostgreSQL's rounds.
    index = sa.func.floor(step) if dialect == "postgresql" else step
    return sa.case(
        (seconds.is_(None), sa.null()),
        (seconds < start, -1),
        (seconds >= end, sa.null()),
        else_=sa.cast(index, sa.Integer),
    )


def _joined_and_left() -> tuple[Any, Any]:
    """When each subscriber last became active, and when they stopped being (NULL: they
    never were, or still are). Only the latest of each time is kept, so a subscriber who
    left and came back counts from their return."""
    s = subscribers.c
    joined = sa.case(
        (s.confirmed_at.is_not(None), s.confirmed_at),
        (s.status != "pending", s.created_at),
    )
    left = sa.case(
        (s.status == "active", sa.null()),
        (s.status == "bounced", sa.func.coalesce(s.status_at, s.updated_at)),
        else_=sa.func.coalesce(s.unsubscribed_at, s.updated_at),
    )
    return joined, left


class ConsoleQueries(StoreBase):
    def count_by_lang(self) -> dict[str, int]:
        """Subscribers by language, whatever their state."""
        found: dict[str, int] = {}
        for (lang, _), count in self.count_by_lang_and_state().items():
            found[lang] = found.get(lang, 0) + count
        return found

    def count_by_lang_and_state(self) -> dict[tuple[str, str], int]:
        """Subscribers by (language, state): one read of the (language, state) index."""
        s = subscribers.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(s.lang, s.status, sa.func.count()).group_by(s.lang, s.status)
            ).all()
        return {(lang, state): int(count) for lang, state, count in rows}

    def subscriber_page(
        self,
        *,
        query: str = "",
        status: str | None = None,
        lang: str | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> tuple[list[Subscriber], int]:
        """Up to ``limit + 1`` matching subscribers after id ``after``, in id order (one more
        than asked: it tells whether a page follows), and how many match in all."""
        where = matching(self.dialect, query=query, status=status, lang=lang)
        page = sa.select(subscribers).where(*where).order_by(subscribers.c.id).limit(limit + 1)
        if after is not None:
            page = page.where(subscribers.c.id > after)
        total = sa.select(sa.func.count()).select_from(subscribers).where(*where)
        with self.engine.connect() as conn:
            rows = conn.execute(page).all()
            # A first page that holds every match has counted them already: a search
            # finding few rows reads the list once, not twice.
            whole = after is None and len(rows) <= limit
            count = len(rows) if whole else conn.execute(total).scalar_one()
        return [_subscriber(row) for row in rows], int(count)

    def delivery_tallies(self, issue_ids: Iterable[int] | None = None) -> dict[int, DeliveryTally]:
        """Each issue's :class:`DeliveryTally` (only those of ``issue_ids`` when given; an
        issue without deliveries is left out), in one statement that reads two indexes:
        (issue, state), and the bounced rows' own."""
        d = deliveries.c
        one = [] if issue_ids is None else [d.issue_id.in_(list(issue_ids))]
        # Literal text, not parameters: PostgreSQL must see the grouped CASE as the
        # selected one, and know the constants' type in a UNION.
        states = (
            sa.select(d.issue_id, sa.literal_column("'state'").label("what"), d.status, _COUNT)
            .where(d.issue_id.is_not(None), *one)
            .group_by(d.issue_id, d.status)
        )
        refused = sa.and_(d.status == sa.literal_column("'failed'"), d.error_kind == _RECIPIENT)
        kind = sa.case((refused, sa.literal_column("'refused'")), else_=d.bounce_kind).label("key")
        reports = (
            sa.select(d.issue_id, sa.literal_column("'report'"), kind, _COUNT)
            .where(d.issue_id.is_not(None), d.bounce_kind.is_not(None), *one)
            .group_by(d.issue_id, kind)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(sa.union_all(states, reports)).all()
        found: dict[int, DeliveryTally] = {}
        for issue, what, key, count in rows:
            tally = found.setdefault(int(issue), DeliveryTally.empty())
            (tally.states if what == "state" else tally.reports)[key] = int(count)
        return found

    def delivery_tally(self, issue_id: int) -> DeliveryTally:
        return self.delivery_tallies([issue_id]).get(issue_id) or DeliveryTally.empty()

    def send_pace(self, issue_id: int, since: dt.datetime) -> SendPace:
        """How many of an issue's messages were handed over from ``since`` on, and the
        first of them: one statement reading only those entries of the (issue, sent_at)
        index, as cheap at the end of a send of 100,000 as at its start."""
        d = deliveries.c
        query = sa.select(sa.func.count(), sa.func.min(d.sent_at)).where(
            d.issue_id == issue_id, d.sent_at.is_not(None), d.sent_at >= since
        )
        with self.engine.connect() as conn:
            count, first = conn.execute(query).one()
        return SendPace(since, int(count), _aware(first))

    def recent_reports(self, limit: int = 100) -> list[ReportRow]:
        """The latest reports acted on, newest first."""
        b = bounce_events.c
        query = (
            sa.select(bounce_events, subscribers.c.email, issues.c.week)
            .join(subscribers, subscribers.c.id == b.subscriber_id)
            .outerjoin(deliveries, deliveries.c.id == b.delivery_id)
            .outerjoin(issues, issues.c.id == deliveries.c.issue_id)
            .order_by(b.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            ReportRow(
                id=row.id,
                created_at=_aware(row.created_at),
                subscriber_id=row.subscriber_id,
                email=row.email,
                kind=row.kind,
                status_code=row.status_code,
                diagnostic=row.diagnostic,
                source=row.source,
                action=row.action,
                delivery_id=row.delivery_id,
                week=row.week,
            )
            for row in rows
        ]

    def unmatched_reports(self, limit: int = 100) -> list[UnmatchedReport]:
        """The latest reports that acted on nobody, newest first."""
        u = unmatched_reports.c
        query = sa.select(unmatched_reports).order_by(u.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            UnmatchedReport(
                id=row.id,
                created_at=_aware(row.created_at),
                report_id=row.report_id,
                kind=row.kind,
                addresses=row.addresses,
                diagnostic=row.diagnostic,
            )
            for row in rows
        ]

    def joins_and_leaves(
        self, start: dt.datetime, end: dt.datetime, step: dt.timedelta
    ) -> list[tuple[int, int | None, int]]:
        """The list's comings and goings by step from ``start`` to ``end``: rows of (step
        joined, step left or None, how many subscribers), where step -1 is before
        ``start`` and a time from ``end`` on counts as not yet. One pass over the list,
        grouped in the database."""
        joined, left = _joined_and_left()
        first, last = start.timestamp(), end.timestamp()
        width = step.total_seconds()
        came = _bucket(self.dialect, joined, first, last, width).label("came")
        went = _bucket(self.dialect, left, first, last, width).label("went")
        query = (
            sa.select(came, went, sa.func.count()).where(joined.is_not(None)).group_by(came, went)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            (int(c), None if w is None else int(w), int(n)) for c, w, n in rows if c is not None
        ]
