"""Issues: their states as recorded, and their frozen content."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from newsletter.store.base import StoreBase, _aware, utcnow
from newsletter.store.ledger import _count_in
from newsletter.store.tables import (
    DELIVERY_STATUSES,
    ISSUE_STATUSES,
    deliveries,
    issue_contents,
    issues,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Issue:
    """An issue as recorded; every time is timezone-aware (UTC)."""

    id: int
    week: str
    subject: str
    status: str
    recipients: int
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    content_hash: str | None
    frozen_settings: str | None
    frozen_at: dt.datetime | None
    approved_at: dt.datetime | None
    paused_at: dt.datetime | None
    paused_reason: str | None
    resume_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    paused_by: str | None


_TIMES = frozenset(f.name for f in fields(Issue) if f.name.endswith("_at"))


def _issue(row: Any) -> Issue:
    values: dict[str, Any] = dict(row._mapping)
    for name in _TIMES:
        values[name] = _aware(values[name])
    return Issue(**{f.name: values[f.name] for f in fields(Issue)})


def _issue_or_none(row: Any) -> Issue | None:
    return None if row is None else _issue(row)


@dataclass(frozen=True, slots=True)
class FrozenContent:
    """What an issue's messages in one language are built from, as approved."""

    lang: str
    subject: str
    html: str
    text: str
    preheader: str
    marker: str
    web_url: str


class IssueQueries(StoreBase):
    def get_issue(self, week: str) -> Issue | None:
        with self.engine.connect() as conn:
            return _issue_or_none(
                conn.execute(sa.select(issues).where(issues.c.week == week)).first()
            )

    def ensure_issue(self, week: str, subject: str, status: str = "draft") -> Issue:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(issues)
                .values(week=week, subject=subject, status=status, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["week"])
            )
            return _issue(conn.execute(sa.select(issues).where(issues.c.week == week)).one())

    def issues_in_status(self, *statuses: str) -> list[Issue]:
        with self.engine.connect() as conn:
            return [
                _issue(row)
                for row in conn.execute(
                    sa.select(issues).where(issues.c.status.in_(statuses)).order_by(issues.c.week)
                )
            ]

    def get_issue_by_id(self, issue_id: int) -> Issue | None:
        with self.engine.connect() as conn:
            return _issue_or_none(
                conn.execute(sa.select(issues).where(issues.c.id == issue_id)).first()
            )

    def list_issues(self) -> list[Issue]:
        """Every issue, newest week first."""
        with self.engine.connect() as conn:
            return [
                _issue(r) for r in conn.execute(sa.select(issues).order_by(issues.c.week.desc()))
            ]

    def latest_issue(self) -> Issue | None:
        with self.engine.connect() as conn:
            return _issue_or_none(
                conn.execute(sa.select(issues).order_by(issues.c.week.desc()).limit(1)).first()
            )

    def all_counts(self) -> dict[int, dict[str, int]]:
        """Delivery counts of every issue, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.issue_id, deliveries.c.status, sa.func.count())
                .where(deliveries.c.issue_id.is_not(None))
                .group_by(deliveries.c.issue_id, deliveries.c.status)
            ).all()
        found: dict[int, dict[str, int]] = {}
        for issue_id, status, count in rows:
            found.setdefault(issue_id, dict.fromkeys(DELIVERY_STATUSES, 0))[status] = int(count)
        return found

    def transition(
        self,
        issue_id: int,
        from_statuses: Iterable[str],
        to: str,
        *,
        when_paused_by: Iterable[str] | None = None,
        **values: Any,
    ) -> bool:
        """Move an issue to ``to`` only if it is in one of ``from_statuses`` now, and, when
        ``when_paused_by`` is given and the issue is paused, paused by one of those (a compare
        and set: two processes cannot both make the same transition). The rule of which
        moves exist is :mod:`newsletter.lifecycle`'s; this only applies it atomically."""
        if to not in ISSUE_STATUSES:
            raise ValueError(to)
        condition: sa.ColumnElement[bool] = issues.c.status.in_(tuple(from_statuses))
        if when_paused_by is not None:
            condition = sa.and_(
                condition,
                sa.or_(issues.c.status != "paused", issues.c.paused_by.in_(tuple(when_paused_by))),
            )
        with self.engine.begin() as conn:
            result = conn.execute(
                issues.update()
                .where(issues.c.id == issue_id, condition)
                .values(status=to, updated_at=utcnow(), **values)
            )
        return bool(result.rowcount)

    def freeze_issue(
        self,
        issue_id: int,
        contents: Iterable[dict[str, str]],
        settings: str,
        content_hash: str,
        *,
        replace: bool = False,
    ) -> str:
        """Store what every message of the issue will be built from: ``frozen``; ``kept``
        when it is frozen already (another process got there first) and ``replace`` is
        false; ``refused`` once any message of the issue was handed to a server."""
        now = utcnow()
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(
                    sa.select(issues.c.id).where(issues.c.id == issue_id).with_for_update()
                )
            current = conn.execute(
                sa.select(issues.c.content_hash).where(issues.c.id == issue_id)
            ).scalar()
            if current is not None and not replace:
                return "kept"
            handed = conn.execute(_count_in(issue_id, ("sending", "sent"))).scalar_one()
            if handed:
                return "refused"
            conn.execute(issue_contents.delete().where(issue_contents.c.issue_id == issue_id))
            conn.execute(
                issue_contents.insert(), [{"issue_id": issue_id, **row} for row in contents]
            )
            conn.execute(
                issues.update()
                .where(issues.c.id == issue_id)
                .values(
                    content_hash=content_hash,
                    frozen_settings=settings,
                    frozen_at=now,
                    updated_at=now,
                )
            )
        return "frozen"

    def frozen_contents(self, issue_id: int) -> list[FrozenContent]:
        c = issue_contents.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.lang, c.subject, c.html, c.text, c.preheader, c.marker, c.web_url)
                .where(c.issue_id == issue_id)
                .order_by(c.lang)
            ).all()
        return [FrozenContent(*row) for row in rows]

    def skip_pending(self, issue_id: int, reason: str) -> int:
        """Every delivery of a cancelled issue still waiting becomes ``skipped``: queued
        ones, leased or not (a sender's claimed batch is never sent once the issue is
        cancelled), and ``sending`` ones whose holder's lease ran out (it died). Rows on
        the wire right now finish as they are."""
        d = deliveries.c
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                deliveries.update()
                .where(
                    d.issue_id == issue_id,
                    sa.or_(
                        d.status == "queued",
                        sa.and_(
                            d.status == "sending",
                            sa.or_(d.lease_until.is_(None), d.lease_until < now),
                        ),
                    ),
                )
                .values(
                    status="skipped",
                    last_error=reason,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
            )
        return int(result.rowcount or 0)
