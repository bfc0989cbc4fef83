"""What comes back after the 250: bounces, complaints and mailed unsubscribes."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.base import REPORT_KINDS, StoreBase, _aware, utcnow
from newsletter.store.tables import (
    bounce_events,
    confirmations,
    deliveries,
    subscribers,
    unmatched_reports,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """A report acted on (a bounce, a complaint, a mailed unsubscribe, a webhook event), as
    recorded; ``created_at`` is timezone-aware (UTC)."""

    id: int
    report_id: str
    subscriber_id: int
    delivery_id: int | None
    kind: str
    status_code: str | None
    diagnostic: str | None
    source: str
    action: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Unmatched:
    """The reports that acted on nobody: how many, and when the latest came (None: none)."""

    count: int
    latest: dt.datetime | None


def _bounce_event(row: sa.Row[Any]) -> BounceEvent:
    return BounceEvent(
        id=row.id,
        report_id=row.report_id,
        subscriber_id=row.subscriber_id,
        delivery_id=row.delivery_id,
        kind=row.kind,
        status_code=row.status_code,
        diagnostic=row.diagnostic,
        source=row.source,
        action=row.action,
        created_at=_aware(row.created_at),
    )


class ReportQueries(StoreBase):
    def delivery_target(self, delivery_id: int) -> tuple[int, int] | None:
        """(delivery id, subscriber id) of a delivery that exists and names a subscriber:
        an issue's, or a single mail to a known address (a confirmation's)."""
        return self._target(deliveries.c.id == delivery_id)

    def delivery_by_message_id(self, message_id: str) -> tuple[int, int] | None:
        """(delivery id, subscriber id) of the delivery sent with ``message_id`` (``<>``
        included)."""
        return self._target(deliveries.c.message_id == message_id)

    def _target(self, where: sa.ColumnElement[bool]) -> tuple[int, int] | None:
        d = deliveries.c
        by_address = (
            sa.select(subscribers.c.id)
            .where(subscribers.c.email_key == sa.func.lower(d.recipient))
            .scalar_subquery()
        )
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(d.id, sa.func.coalesce(d.subscriber_id, by_address).label("sub"))
                .where(where)
                .limit(1)
            ).first()
        return (row.id, row.sub) if row is not None and row.sub is not None else None

    def latest_delivery(self, subscriber_id: int) -> int | None:
        """The subscriber's most recent delivery handed to a server."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(sa.func.max(deliveries.c.id)).where(
                    deliveries.c.subscriber_id == subscriber_id,
                    deliveries.c.status.in_(("sent", "failed")),
                )
            ).scalar()
        return int(value) if value is not None else None

    def record_report(
        self,
        *,
        report_id: str,
        source: str,
        kind: str,
        subscriber_id: int,
        delivery_id: int | None,
        status_code: str = "",
        diagnostic: str = "",
        bounce_threshold: int = 3,
    ) -> str | None:
        """Act on one report for one subscriber, in one transaction with its record.

        ``hard``: the subscriber becomes ``bounced``. ``soft``: counted over consecutive
        issues (a delivery in between that did not bounce starts the count again), bounced
        at ``bounce_threshold``. ``complaint``: ``unsubscribed`` (reason ``complaint``),
        whatever the status was. ``unsubscribe``: ``unsubscribed``. ``blocked`` (a policy
        or content refusal) says nothing about the address: only recorded.

        Returns what was done, or None when this report was recorded before: processing
        the same report again changes nothing.
        """
        if kind not in REPORT_KINDS:
            raise ValueError(kind)
        now = utcnow()
        code = (status_code or "")[:16] or None
        detail = (diagnostic or "")[:2000] or None
        with self.engine.begin() as conn:
            if self.is_postgres:
                # Two reports for one subscriber at once: one after the other.
                conn.execute(
                    sa.select(subscribers.c.id)
                    .where(subscribers.c.id == subscriber_id)
                    .with_for_update()
                )
            first_time = self._insert_report(
                conn,
                report_id=report_id[:300],
                subscriber_id=subscriber_id,
                delivery_id=delivery_id,
                kind=kind,
                status_code=code,
                diagnostic=detail,
                source=source,
                created_at=now,
            )
            if not first_time:
                return None
            if delivery_id is not None:
                _mark_delivery(conn, delivery_id, kind, code, detail, now)
            action = self._apply_report(
                conn, kind, subscriber_id, code, detail, now, bounce_threshold
            )
            _note_action(conn, report_id[:300], subscriber_id, action)
        return action

    def _insert_report(self, conn: Connection, **values: Any) -> bool:
        """Record a report for a subscriber; False when it was recorded before."""
        inserted = conn.execute(
            self._insert(bounce_events)
            .values(action="", **values)
            .on_conflict_do_nothing(index_elements=["report_id", "subscriber_id"])
        )
        return bool(inserted.rowcount)

    def _apply_report(
        self,
        conn: Connection,
        kind: str,
        subscriber_id: int,
        code: str | None,
        detail: str | None,
        now: dt.datetime,
        bounce_threshold: int,
    ) -> str:
        """The report's effect on its subscriber; returns what was done."""
        sub = conn.execute(sa.select(subscribers).where(subscribers.c.id == subscriber_id)).one()
        why: dict[str, Any] = {
            "status_code": code,
            "status_detail": detail,
            "status_at": now,
            "updated_at": now,
        }
        if kind == "hard" and sub.status in ("active", "pending"):
            _set_subscriber(
                conn, subscriber_id, status="bounced", status_reason="hard_bounce", **why
            )
            return "bounced"
        if kind == "soft":
            return soft_bounce(conn, sub, bounce_threshold, why)[0]
        if kind == "complaint":
            # Whatever the status: a complaint must never be mailed again, and the
            # reason stays on record until the address confirms anew.
            _set_subscriber(
                conn,
                subscriber_id,
                status="unsubscribed",
                status_reason="complaint",
                unsubscribed_at=sub.unsubscribed_at or now,
                **why,
            )
            return "unsubscribed (complaint)"
        if kind == "unsubscribe" and sub.status in ("active", "pending"):
            _set_subscriber(
                conn,
                subscriber_id,
                status="unsubscribed",
                status_reason="unsubscribe_mail",
                unsubscribed_at=now,
                **why,
            )
            return "unsubscribed"
        return f"recorded ({sub.status})"

    def bounce_counts(self, issue_id: int) -> dict[str, int]:
        """An issue's deliveries by what came back: hard, soft, complaint, unsubscribe,
        blocked, and ``refused`` for addresses refused during the SMTP dialogue."""
        d = deliveries.c
        # A refused recipient's delivery carries the kind it counted as (hard or soft),
        # but it is counted once, as refused.
        refused_rows = sa.and_(d.status == "failed", d.error_kind == "recipient")
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(d.bounce_kind, sa.func.count())
                .where(d.issue_id == issue_id, d.bounce_kind.is_not(None), ~refused_rows)
                .group_by(d.bounce_kind)
            ).all()
            refused = conn.execute(
                sa.select(sa.func.count()).where(d.issue_id == issue_id, refused_rows)
            ).scalar_one()
        found = {kind: int(count) for kind, count in rows}
        found["refused"] = int(refused)
        return found

    def record_unmatched(
        self, *, report_id: str, kind: str, addresses: list[str], diagnostic: str = ""
    ) -> bool:
        """Note a report that proved no delivery of ours; False when it was noted before."""
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert(unmatched_reports)
                .values(
                    report_id=report_id[:300],
                    kind=kind[:16],
                    addresses=", ".join(addresses)[:2000],
                    diagnostic=(diagnostic or "")[:2000] or None,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["report_id"])
            )
        return bool(inserted.rowcount)

    def unmatched(self) -> Unmatched:
        """How many reports acted on nobody, and when the latest came."""
        with self.engine.connect() as conn:
            count, latest = conn.execute(
                sa.select(sa.func.count(), sa.func.max(unmatched_reports.c.created_at))
            ).one()
        return Unmatched(int(count), _aware(latest))

    def reports(self, subscriber_id: int | None = None) -> list[BounceEvent]:
        """Recorded reports, oldest first."""
        query = sa.select(bounce_events).order_by(bounce_events.c.id)
        if subscriber_id is not None:
            query = query.where(bounce_events.c.subscriber_id == subscriber_id)
        with self.engine.connect() as conn:
            return [_bounce_event(row) for row in conn.execute(query)]

    def delete_unconfirmed(self, before: dt.datetime) -> tuple[int, int]:
        """Pending subscriptions last asked for before ``before`` and never confirmed: rows
        with no history are deleted; a former subscriber who asked again and never
        confirmed goes back to ``unsubscribed``, keeping the reason on record (a
        complaint stays one). Returns (deleted, set back)."""
        s = subscribers.c
        history = sa.or_(
            sa.select(deliveries.c.id).where(deliveries.c.subscriber_id == s.id).exists(),
            sa.select(bounce_events.c.id).where(bounce_events.c.subscriber_id == s.id).exists(),
        )
        # A request still open (its link has not expired) keeps its subscriber row.
        open_request = (
            sa.select(confirmations.c.id).where(confirmations.c.subscriber_id == s.id).exists()
        )
        stale = (s.status == "pending", s.updated_at < before, ~open_request)
        with self.engine.begin() as conn:
            conn.execute(confirmations.delete().where(confirmations.c.created_at < before))
            deleted = conn.execute(subscribers.delete().where(*stale, ~history)).rowcount
            restored = conn.execute(
                subscribers.update()
                .where(*stale, history)
                .values(status="unsubscribed", updated_at=utcnow())
            ).rowcount
        return int(deleted or 0), int(restored or 0)


def soft_bounce(
    conn: Connection, sub: sa.Row[Any], bounce_threshold: int, why: dict[str, Any]
) -> tuple[str, bool]:
    """Count a soft bounce (by mail, or refused during the SMTP dialogue); at
    ``bounce_threshold`` in a row an active subscriber is bounced. Returns what was done,
    and whether it bounced the subscriber."""
    streak = _soft_streak(conn, sub.id, bounce_threshold)
    values: dict[str, Any] = {"soft_bounces": streak, "updated_at": why["updated_at"]}
    action = f"soft bounce {streak} of {bounce_threshold}"
    bounced = streak >= bounce_threshold and sub.status == "active"
    if bounced:
        values.update(status="bounced", status_reason="soft_bounces", **why)
        action += ": bounced"
    _set_subscriber(conn, sub.id, **values)
    return action, bounced


def _soft_streak(conn: Connection, subscriber_id: int, limit: int) -> int:
    """How many of the subscriber's latest deliveries soft-bounced, one after another."""
    kinds = conn.execute(
        sa.select(deliveries.c.bounce_kind)
        .where(
            deliveries.c.subscriber_id == subscriber_id,
            deliveries.c.status.in_(("sent", "failed")),
        )
        .order_by(deliveries.c.issue_id.desc())
        .limit(max(limit, 1))
    ).scalars()
    streak = 0
    for kind in kinds:
        if kind != "soft":
            break
        streak += 1
    return max(streak, 1)


def _mark_delivery(
    conn: Connection,
    delivery_id: int,
    kind: str,
    code: str | None,
    detail: str | None,
    now: dt.datetime,
) -> None:
    """Note on the delivery what came back for it."""
    conn.execute(
        deliveries.update()
        .where(deliveries.c.id == delivery_id)
        .values(
            bounce_kind=kind,
            bounce_status=code,
            bounce_detail=detail,
            bounced_at=now,
            updated_at=now,
        )
    )


def _set_subscriber(conn: Connection, subscriber_id: int, **values: Any) -> None:
    conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id).values(**values))


def _note_action(conn: Connection, report_id: str, subscriber_id: int, action: str) -> None:
    conn.execute(
        bounce_events.update()
        .where(
            bounce_events.c.report_id == report_id,
            bounce_events.c.subscriber_id == subscriber_id,
        )
        .values(action=action)
    )
