"""The delivery ledger, the outbox: who gets what, who holds which message, what happened.

Every outgoing message is a row here: an issue's deliveries, and single mails (no issue).
The sender sees it through :class:`Claimed` rows and the ``mark_*`` methods alone.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from newsletter.store.base import StoreBase, _aware, utcnow
from newsletter.store.claims import (
    CLAIMED,
    MARK_SENDING,
    MARK_SENT,
    PG_MARK,
    SENDING,
    Claimed,
    claim_params,
    claim_statement,
    claimable_rows,
    due_rows,
    lane_of,
    pg_mark_params,
)
from newsletter.store.reports import soft_bounce
from newsletter.store.tables import (
    DELIVERY_STATUSES,
    UNSENT,
    deliveries,
    issues,
    subscribers,
)

log = logging.getLogger(__name__)


def _count_in(issue_id: int, statuses: tuple[str, ...]) -> sa.Select[Any]:
    """How many of an issue's deliveries are in ``statuses``."""
    return (
        sa.select(sa.func.count())
        .select_from(deliveries)
        .where(deliveries.c.issue_id == issue_id, deliveries.c.status.in_(statuses))
    )


@dataclass(frozen=True, slots=True)
class FailedDelivery:
    """An issue's delivery that gave up: to whom, after how many attempts, and why."""

    email: str
    attempts: int
    last_error: str | None


# Subscriber ids per statement of a fan-out. Each range is its own short transaction: a
# fan-out to a million holds SQLite's one write lock (and a PostgreSQL transaction) for a
# fraction of a second at a time, and keeps what it made if it is cut short.
FAN_OUT_IDS = 50_000


def _fan_out_statement(
    insert: postgresql.Insert | sqlite.Insert, issue_id: int, now: dt.datetime
) -> postgresql.Insert | sqlite.Insert:
    """One queued delivery of ``issue_id`` per active subscriber whose id is above
    ``b_low`` and at most ``b_high``, made in the database (no subscriber passes through
    this process); a subscriber who has one already is left as is."""
    s = subscribers.c
    select = sa.select(
        sa.literal(issue_id),
        s.id,
        sa.literal("queued"),
        sa.literal(0),
        sa.literal(now, sa.DateTime(timezone=True)),
        sa.literal(now, sa.DateTime(timezone=True)),
    ).where(
        s.status == "active",
        s.id > sa.bindparam("b_low", type_=sa.Integer),
        s.id <= sa.bindparam("b_high", type_=sa.Integer),
    )
    columns = ["issue_id", "subscriber_id", "status", "attempts", "next_attempt_at", "updated_at"]
    return insert.from_select(columns, select).on_conflict_do_nothing(
        index_elements=["issue_id", "subscriber_id"]
    )


class LedgerQueries(StoreBase):
    def fan_out(self, issue_id: int, *, batch: int = FAN_OUT_IDS) -> int:
        """One queued delivery per active subscriber, idempotently, ``batch`` subscriber
        ids per transaction (:data:`FAN_OUT_IDS`); returns rows added. Those who
        subscribe after it began (above the highest id it saw) are left to the next one,
        as they would be by one statement begun before them."""
        now = utcnow()
        stmt = _fan_out_statement(self._insert(deliveries), issue_id, now)
        count = (
            sa.select(sa.func.count())
            .select_from(deliveries)
            .where(deliveries.c.issue_id == issue_id)
        )
        with self.engine.connect() as conn:
            # Counted before and after: drivers disagree on rowcount for INSERT ... SELECT.
            before = conn.execute(count).scalar_one()
            top = conn.execute(sa.select(sa.func.max(subscribers.c.id))).scalar() or 0
        step = max(batch, 1)
        for low in range(0, top, step):
            with self.engine.begin() as conn:
                conn.execute(stmt, {"b_low": low, "b_high": low + step})
        with self.engine.begin() as conn:
            total = conn.execute(count).scalar_one()
            conn.execute(
                issues.update()
                .where(issues.c.id == issue_id)
                .values(recipients=total, updated_at=now)
            )
        return int(total - before)

    def has_deliveries(self, issue_id: int) -> bool:
        """Whether the issue has any delivery at all, in whatever state (the first row
        found answers: no count of a long list)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.exists().where(deliveries.c.issue_id == issue_id))
            ).scalar()
        return bool(found)

    def claim(
        self,
        issue_id: int | None,
        owner: str,
        limit: int,
        lease: dt.timedelta,
        now: dt.datetime | None = None,
        *,
        only: int | None = None,
        chat: bool = False,
    ) -> list[Claimed]:
        """Lease up to ``limit`` messages of one lane of the outbox that are due: an issue's
        deliveries, or the single mails (``issue_id`` None). Due are queued rows whose retry
        time has come, and ``sending`` ones whose holder's lease ran out (it died mid-send).

        On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets any number of workers claim at
        once without blocking or taking the same row. ``only``: that row alone, if due;
        ``chat``: the chat posts' lane instead of the single mails'.
        """
        now = now or utcnow()
        params = claim_params(issue_id, owner, limit, lease, now, only)
        if self.is_postgres:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                result = conn.execute(
                    claim_statement(lane_of(issue_id, chat), only is not None), params
                )
                return [Claimed(*row) for row in result]
        d = deliveries
        claimable = claimable_rows(lane_of(issue_id, chat), only is not None)
        with self.engine.begin() as conn:
            ids = [row.id for row in conn.execute(due_rows(claimable), params)]
            if not ids:
                return []
            # SQLite has no row locks and reads before it writes: another process may
            # have leased some of these rows since the SELECT. The UPDATE checks again,
            # atomically, and only the rows it leased to ``owner`` are returned.
            conn.execute(
                d.update()
                .where(d.c.id.in_(ids), *claimable)
                .values(lease_owner=owner, lease_until=now + lease),
                params,
            )
            rows = conn.execute(
                CLAIMED.where(d.c.id.in_(ids), d.c.lease_owner == owner).order_by(d.c.id)
            ).all()
        return [Claimed(*row) for row in rows]

    def mark_sending(
        self,
        delivery_id: int,
        owner: str,
        message_id: str,
        *,
        sent: tuple[int, str] | None = None,
        lease: dt.timedelta = dt.timedelta(minutes=5),
    ) -> str:
        """Just before DATA: ``sending`` if the row is still ours and, for an issue's
        delivery, the subscriber still active; ``skipped`` when they left meanwhile;
        ``stopped`` when the issue is no longer being sent (paused or cancelled
        meanwhile: the row is let go, as it was); ``lost`` when the lease was lost.

        ``sent`` (delivery id, Message-ID) records the worker's previous message as sent
        in the same transaction: it is written in the instant between that message's 250
        and this one's DATA, so it is no later than a commit of its own would be, and
        each message costs one commit instead of two.
        """
        now = utcnow()
        if self.is_postgres and self._marked_in_one_trip(
            delivery_id, owner, message_id, sent, lease
        ):
            return "sending"
        with self.engine.begin() as conn:
            if sent is not None and not self.is_postgres:
                conn.execute(MARK_SENT, {"b_id": sent[0], "b_message_id": sent[1], "b_now": now})
            result = conn.execute(
                MARK_SENDING,
                {
                    "b_id": delivery_id,
                    "b_owner": owner,
                    "b_message_id": message_id,
                    "b_now": now,
                    "b_until": now + lease,
                },
            )
            if result.rowcount:
                return "sending"
            return _not_marked(conn, delivery_id, owner, now)

    def _marked_in_one_trip(
        self,
        delivery_id: int,
        owner: str,
        message_id: str,
        sent: tuple[int, str] | None,
        lease: dt.timedelta,
    ) -> bool:
        """:meth:`mark_sending`'s usual case on PostgreSQL as one statement, committed on
        its own: each round trip to the server is most of a message's ledger cost there.
        The previous message's ``sent`` is written whatever the answer; False when this
        row was not marked (the caller finds out why)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            marked = conn.execute(
                PG_MARK, pg_mark_params(delivery_id, owner, message_id, sent, lease)
            ).first()
        return marked is not None

    def mark_sent(self, delivery_id: int, message_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                MARK_SENT, {"b_id": delivery_id, "b_message_id": message_id, "b_now": utcnow()}
            )

    def mark_retry(self, delivery_id: int, error: str, at: dt.datetime, **detail: Any) -> None:
        """Back to the queue until ``at``; the attempt counts."""
        with self.engine.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id)
                .values(
                    status="queued",
                    last_error=error[:1000],
                    next_attempt_at=at,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=utcnow(),
                    **detail,
                )
            )

    def requeue(
        self,
        delivery_ids: Iterable[int],
        error: str,
        *,
        at: dt.datetime | None = None,
        **detail: Any,
    ) -> int:
        """Back to the queue as if never tried: the failure was not the recipient's (the
        server was down, or a policy block paused the issue), so the attempt is given back.
        Due again at ``at`` (default: now). A delivery of an issue cancelled meanwhile (it
        was on the wire at the cancel) is skipped instead: nothing would ever send it."""
        ids = list(delivery_ids)
        if not ids:
            return 0
        now = utcnow()
        cancelled = (
            sa.select(issues.c.id)
            .where(issues.c.id == deliveries.c.issue_id, issues.c.status == "cancelled")
            .exists()
        )
        with self.engine.begin() as conn:
            result = conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids), deliveries.c.status.in_(("sending", "failed")))
                .values(
                    status=sa.case((cancelled, "skipped"), else_="queued"),
                    attempts=sa.case(
                        (deliveries.c.attempts > 0, deliveries.c.attempts - 1), else_=0
                    ),
                    last_error=sa.case((cancelled, "issue cancelled"), else_=error[:1000]),
                    next_attempt_at=at or now,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                    **detail,
                )
            )
        return int(result.rowcount or 0)

    def mark_failed(
        self,
        delivery_id: int,
        error: str,
        *,
        bounce: str | None = None,
        bounce_threshold: int,
        **detail: Any,
    ) -> bool:
        """Record a failure. ``bounce`` is what a refused address counts as, the same as a
        report by mail with that code (:meth:`record_report`): ``hard`` bounces an issue's
        subscriber at once, ``soft`` counts toward ``bounce_threshold`` soft bounces in
        consecutive issues; None (the message, a policy, the server) counts nothing, and
        neither does a single mail. Returns whether the subscriber became ``bounced``."""
        now = utcnow()
        code = detail.get("enhanced_code") or str(detail.get("smtp_code") or "")
        noted = {} if bounce is None else {"bounce_kind": bounce, "bounce_status": code or None}
        with self.engine.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id)
                .values(
                    status="failed",
                    last_error=error[:1000],
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                    **noted,
                    **detail,
                )
            )
            if bounce not in ("hard", "soft"):
                return False
            sub_id = conn.execute(
                sa.select(deliveries.c.subscriber_id).where(
                    deliveries.c.id == delivery_id, deliveries.c.issue_id.is_not(None)
                )
            ).scalar()
            if sub_id is None:
                return False  # a single mail: its address is not a subscriber's to count
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == sub_id)
                .values(bounces=subscribers.c.bounces + 1, updated_at=now)
            )
            sub = conn.execute(sa.select(subscribers).where(subscribers.c.id == sub_id)).one()
            why = {"status_code": code, "status_detail": error[:1000], "status_at": now}
            if bounce == "soft":
                return soft_bounce(conn, sub, bounce_threshold, why | {"updated_at": now})[1]
            result = conn.execute(
                subscribers.update()
                .where(subscribers.c.id == sub_id, subscribers.c.status == "active")
                .values(status="bounced", status_reason="refused", updated_at=now, **why)
            )
            return bool(result.rowcount)

    def release(self, delivery_ids: Iterable[int], owner: str) -> None:
        """Give back leased rows that were never handed to the server (a clean stop)."""
        ids = list(delivery_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids), deliveries.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None, updated_at=utcnow())
            )

    def release_dead_local_leases(self, alive: Callable[[int], bool]) -> int:
        """Free rows leased by processes of this host that no longer exist, so a restart
        after a kill resumes at once instead of waiting for the lease to run out."""
        prefix = f"{socket.gethostname()}:"
        with self.engine.connect() as conn:
            owners = (
                conn.execute(
                    sa.select(deliveries.c.lease_owner)
                    .distinct()
                    # A leased row is always unsent: the index of unsent rows finds them
                    # without reading the ledger of every issue ever sent.
                    .where(sa.text(f"deliveries.{UNSENT}"))
                    .where(deliveries.c.lease_owner.like(prefix + "%"))
                )
                .scalars()
                .all()
            )
        dead = []
        for owner in owners:
            try:
                pid = int(owner[len(prefix) :].split(":", 1)[0])
            except ValueError:
                continue
            if not alive(pid):
                dead.append(owner)
        if not dead:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(
                deliveries.update()
                .where(deliveries.c.lease_owner.in_(dead))
                .values(lease_until=utcnow() - dt.timedelta(seconds=1))
            )
        return int(result.rowcount or 0)

    def retry_failed(self, issue_id: int) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                deliveries.update()
                .where(deliveries.c.issue_id == issue_id, deliveries.c.status == "failed")
                .values(status="queued", attempts=0, next_attempt_at=utcnow(), updated_at=utcnow())
            )
        return int(result.rowcount or 0)

    def counts(self, issue_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.status, sa.func.count())
                .where(deliveries.c.issue_id == issue_id)
                .group_by(deliveries.c.status)
            ).all()
        found = {status: int(count) for status, count in rows}
        return {status: found.get(status, 0) for status in DELIVERY_STATUSES}

    def next_retry_at(self, issue_id: int) -> dt.datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.issue_id == issue_id, deliveries.c.status == "queued"
                )
            ).scalar()
        return _aware(value)

    def pending(self, issue_id: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(_count_in(issue_id, ("queued", "sending"))).scalar_one())

    def failures(self, issue_id: int, limit: int = 100) -> list[FailedDelivery]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(subscribers.c.email, deliveries.c.attempts, deliveries.c.last_error)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.issue_id == issue_id, deliveries.c.status == "failed")
                .order_by(deliveries.c.id)
                .limit(limit)
            ).all()
        return [FailedDelivery(row.email, row.attempts, row.last_error) for row in rows]


def _not_marked(conn: sa.Connection, delivery_id: int, owner: str, now: dt.datetime) -> str:
    """Why a row held by ``owner`` was not marked sending, acted on (see
    :meth:`LedgerQueries.mark_sending`): its issue stopped being sent (the row is let go),
    its subscriber left (skipped), or it is no longer ``owner``'s (lost)."""
    d = deliveries
    held = (d.c.id == delivery_id, d.c.lease_owner == owner, d.c.status.in_(("queued", "sending")))
    stopped = conn.execute(
        d.update()
        .where(*held, d.c.issue_id.is_not(None), ~SENDING)
        .values(lease_owner=None, lease_until=None)
    )
    if stopped.rowcount:
        return "stopped"
    skipped = conn.execute(
        d.update()
        .where(*held)
        .values(
            status="skipped",
            last_error="subscriber is no longer active",
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )
    )
    return "skipped" if skipped.rowcount else "lost"
