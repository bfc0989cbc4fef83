"""The outbox's statements on the sending path: the claim, and the marks around each
message. The store runs them (:mod:`newsletter.store.ledger`), and so does a sending lane
over a connection of its own (:mod:`newsletter.store.lanes`).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from newsletter.store.base import utcnow
from newsletter.store.tables import CHAT_KINDS, UNSENT, deliveries, issues, subscribers

# The checks of a delivery's subscriber and issue compare the one row's state, read by
# its key. As EXISTS, under the OR of MARK_SENDING, PostgreSQL may turn them into a hash
# of every active subscriber, built again at each mark: it did on a list imported
# moments before, planned from the statistics of an empty table (a millisecond a mark on
# 3,000 subscribers). A subquery for one value is looked up row by row, whatever the
# statistics. Both rows exist: deliveries refer to them by foreign key.
ACTIVE = (
    sa.select(subscribers.c.status)
    .where(subscribers.c.id == deliveries.c.subscriber_id)
    .scalar_subquery()
    == "active"
)
# The delivery's issue is being sent: a pause or a cancel stops the messages a sender
# already holds, not only its next claim.
SENDING = (
    sa.select(issues.c.status).where(issues.c.id == deliveries.c.issue_id).scalar_subquery()
    == "sending"
)
MARK_SENDING = (
    deliveries.update()
    .where(
        deliveries.c.id == sa.bindparam("b_id"),
        deliveries.c.lease_owner == sa.bindparam("b_owner"),
        deliveries.c.status.in_(("queued", "sending")),
        # An issue goes to active subscribers only; a single mail has its own recipient.
        sa.or_(deliveries.c.issue_id.is_(None), sa.and_(ACTIVE, SENDING)),
    )
    .values(
        status="sending",
        attempts=deliveries.c.attempts + 1,
        message_id=sa.bindparam("b_message_id"),
        # A fresh lease for the time the message is on the wire.
        lease_until=sa.bindparam("b_until"),
        updated_at=sa.bindparam("b_now"),
    )
)
MARK_SENT = (
    deliveries.update()
    .where(deliveries.c.id == sa.bindparam("b_id"))
    .values(
        status="sent",
        sent_at=sa.bindparam("b_now"),
        message_id=sa.bindparam("b_message_id"),
        last_error=None,
        lease_owner=None,
        lease_until=None,
        updated_at=sa.bindparam("b_now"),
    )
)


# The previous message recorded sent and this one marked sending, in one statement: a
# data-modifying WITH always runs, and both rows change in one atomic statement. The checks
# are MARK_SENDING's (ACTIVE, SENDING).
PG_MARK = sa.text(
    """
    WITH sent AS (
        UPDATE deliveries SET status = 'sent', sent_at = :now, message_id = :sent_mid,
            last_error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = :now
        WHERE id = :sent_id
        RETURNING id
    )
    UPDATE deliveries AS d SET status = 'sending', attempts = d.attempts + 1,
        message_id = :mid, lease_until = :until, updated_at = :now
    WHERE d.id = :id AND d.lease_owner = :owner AND d.status IN ('queued', 'sending')
        AND (d.issue_id IS NULL OR (
            (SELECT s.status FROM subscribers AS s WHERE s.id = d.subscriber_id) = 'active'
            AND (SELECT i.status FROM issues AS i WHERE i.id = d.issue_id) = 'sending'))
    RETURNING d.id
    """
)


def _literals(values: tuple[str, ...]) -> list[sa.ColumnElement[str]]:
    """Values written into the SQL: a list parameter is expanded only when the engine
    executes, and a lane's own connection runs the statement as compiled once."""
    return [sa.literal_column(f"'{value}'") for value in values]


def lane_of(issue_id: int | None, chat: bool) -> str:
    """The lane a claim takes from: an issue's deliveries, the single mails, or the chat
    posts (a lane of their own: a chat service's outage must not hold a confirmation
    back, and a thread's replies go out one after another)."""
    return "issue" if issue_id is not None else "chat" if chat else "mails"


def claimable_rows(lane: str, only: bool) -> tuple[sa.ColumnElement[bool] | sa.TextClause, ...]:
    """The rows a claim may take from one ``lane`` of the outbox (:func:`lane_of`), with
    the moment (``b_now``), the issue (``b_issue``, for an issue's lane) and ``b_only`` as
    parameters (prefixed: an UPDATE would take a parameter named after a column for a
    value to set)."""
    d = deliveries
    now = sa.bindparam("b_now", type_=sa.DateTime(timezone=True))
    if lane == "issue":
        issue_id = sa.bindparam("b_issue", type_=sa.Integer)
        # An issue's lane holds nothing claimable once the issue stops sending (paused,
        # cancelled): the caller learns why from the issue when nothing comes back.
        sending = sa.select(issues.c.id).where(
            issues.c.id == issue_id, issues.c.status == "sending"
        )
        # A range of one value, not an equality: see due_rows.
        rows = sa.and_(d.c.issue_id.between(issue_id, issue_id), sending.exists())
    elif lane == "chat":
        # A channel's posts go out one after another: only the first one not yet sent is
        # claimable, so a thread keeps its order through retries, outages and several
        # processes at once.
        earlier = deliveries.alias("earlier")
        ahead = (
            sa.select(earlier.c.id)
            .where(
                earlier.c.kind == d.c.kind,
                earlier.c.recipient == d.c.recipient,
                earlier.c.status.in_(_literals(("queued", "sending"))),
                earlier.c.id < d.c.id,
            )
            .exists()
        )
        rows = sa.and_(d.c.issue_id.is_(None), d.c.kind.in_(_literals(CHAT_KINDS)), ~ahead)
    else:
        rows = sa.and_(d.c.issue_id.is_(None), d.c.kind.not_in(_literals(CHAT_KINDS)))
    if only:
        rows = sa.and_(rows, d.c.id == sa.bindparam("b_only", type_=sa.Integer))
    return (
        rows,
        # Queued and due, or sending with its holder's lease run out (it died mid-send).
        # The status test is literal text so that the index of unsent rows serves it.
        sa.text(f"deliveries.{UNSENT}"),
        sa.or_(d.c.lease_until.is_(None), d.c.lease_until < now),
        sa.or_(d.c.status == "sending", d.c.next_attempt_at <= now),
    )


def due_rows(claimable: tuple[sa.ColumnElement[bool] | sa.TextClause, ...]) -> sa.Select[Any]:
    """The first ``b_limit`` claimable rows by id, locked, skipping rows others have locked.

    In the order of the index of unsent rows, (issue, id), which only that index gives: by
    id alone, PostgreSQL may walk the primary key instead, through every row already sent
    (its statistics, taken when the issue was fanned out, say most rows are unsent, and it
    takes them for spread evenly), so that each claim costs more as the send goes on. An
    equality on the issue would make its order implied and let it do so: the issue is a
    range of one value (:func:`claimable_rows`)."""
    d = deliveries
    return (
        sa.select(d.c.id)
        .where(*claimable)
        .order_by(d.c.issue_id, d.c.id)
        .limit(sa.bindparam("b_limit", type_=sa.Integer))
        .with_for_update(skip_locked=True)
    )


@functools.cache
def claim_statement(lane: str, only: bool) -> sa.Select[Any]:
    """A claim on PostgreSQL as one statement (lock, lease and read the rows as
    :class:`Claimed`), with :func:`claimable_rows`'s parameters, ``b_limit``, ``b_owner`` and
    ``b_until``. Rows it locks are skipped by every other claim until their lease is
    written, so no check after the fact is needed."""
    d = deliveries
    picked = due_rows(claimable_rows(lane, only)).cte("picked")
    leased = (
        d.update()
        .where(d.c.id.in_(sa.select(picked.c.id)))
        .values(
            lease_owner=sa.bindparam("b_owner", type_=sa.String),
            lease_until=sa.bindparam("b_until", type_=sa.DateTime(timezone=True)),
        )
        .returning(*(d.c[name] for name in CLAIMED_COLUMNS), d.c.recipient, d.c.data)
        .cte("leased")
    )
    s = subscribers
    return (
        sa.select(
            *(leased.c[name] for name in CLAIMED_COLUMNS),
            sa.func.coalesce(leased.c.recipient, s.c.email).label("email"),
            sa.func.coalesce(s.c.name, "").label("name"),
            sa.func.coalesce(s.c.lang, "").label("lang"),
            leased.c.data,
        )
        .outerjoin_from(leased, s, s.c.id == leased.c.subscriber_id)
        .order_by(leased.c.id)
    )


def claim_params(
    issue_id: int | None,
    owner: str,
    limit: int,
    lease: dt.timedelta,
    now: dt.datetime,
    only: int | None,
) -> dict[str, Any]:
    """The parameters of a claim (:func:`claimable_rows`, :func:`claim_statement`)."""
    return {
        "b_now": now,
        "b_issue": issue_id,
        "b_only": only,
        "b_limit": limit,
        "b_owner": owner,
        "b_until": now + lease,
    }


def pg_mark_params(
    delivery_id: int,
    owner: str,
    message_id: str,
    sent: tuple[int, str] | None,
    lease: dt.timedelta,
) -> dict[str, Any]:
    """The parameters of ``PG_MARK``: this message marked sending, ``sent`` recorded."""
    now = utcnow()
    return {
        "sent_id": sent[0] if sent else -1,
        "sent_mid": sent[1] if sent else "",
        "id": delivery_id,
        "owner": owner,
        "mid": message_id,
        "now": now,
        "until": now + lease,
    }


# A claimed row as the sender needs it: a single mail's recipient, or the subscriber's.
CLAIMED_COLUMNS = ("id", "kind", "issue_id", "subscriber_id", "status", "attempts", "message_id")
CLAIMED = sa.select(
    deliveries.c.id,
    deliveries.c.kind,
    deliveries.c.issue_id,
    deliveries.c.subscriber_id,
    deliveries.c.status,
    deliveries.c.attempts,
    deliveries.c.message_id,
    sa.func.coalesce(deliveries.c.recipient, subscribers.c.email).label("email"),
    sa.func.coalesce(subscribers.c.name, "").label("name"),
    sa.func.coalesce(subscribers.c.lang, "").label("lang"),
    deliveries.c.data,
).outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message leased to one sender: an issue's delivery (built from the issue's frozen
    content for this subscriber) or a single mail (``data``, built in advance)."""

    id: int
    kind: str
    issue_id: int | None
    subscriber_id: int | None
    status: str
    attempts: int
    message_id: str | None
    email: str
    name: str
    lang: str
    data: bytes | None
