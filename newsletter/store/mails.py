"""Single mails in the outbox: confirmations and editor copies, queued as built bytes.

They are rows of the deliveries table with no issue, drained by the same sender as an
issue's deliveries (:meth:`LedgerQueries.claim` with ``issue_id=None``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from newsletter.store.base import StoreBase, _aware, utcnow
from newsletter.store.tables import CHAT_KINDS, MESSAGE_KINDS, deliveries

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mail:
    """A single mail as recorded."""

    id: int
    kind: str
    recipient: str
    message_id: str
    data: bytes
    status: str
    attempts: int
    last_error: str | None
    created_at: dt.datetime | None
    sent_at: dt.datetime | None


_MAIL_COLUMNS = (
    deliveries.c.id,
    deliveries.c.kind,
    deliveries.c.recipient,
    deliveries.c.message_id,
    deliveries.c.data,
    deliveries.c.status,
    deliveries.c.attempts,
    deliveries.c.last_error,
    deliveries.c.created_at,
    deliveries.c.sent_at,
)


def _mail(r: Any) -> Mail:
    return Mail(
        r.id,
        r.kind,
        r.recipient or "",
        r.message_id or "",
        r.data or b"",
        r.status,
        r.attempts,
        r.last_error,
        _aware(r.created_at),
        _aware(r.sent_at),
    )


class MailQueries(StoreBase):
    def enqueue_mail(self, kind: str, recipient: str, message_id: str, data: bytes) -> int:
        """Queue a built single mail; returns its row's id (its delivery id)."""
        if kind not in MESSAGE_KINDS or kind == "issue":
            raise ValueError(kind)
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                deliveries.insert().values(
                    kind=kind,
                    recipient=recipient,
                    message_id=message_id,
                    data=data,
                    status="queued",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def queue_posts(self, kind: str, recipient: str, posts: Sequence[tuple[str, bytes]]) -> int:
        """Queue chat posts, each ``(topic, data)``, to ``recipient`` (a channel), skipping
        every topic queued there before; returns how many were added. Their ids follow the
        order of ``posts``, which is the order they are sent in."""
        if kind not in CHAT_KINDS:
            raise ValueError(kind)
        if not posts:
            return 0
        now = utcnow()
        d = deliveries.c
        mine = sa.and_(d.kind == kind, d.recipient == recipient, d.topic.is_not(None))
        count = sa.select(sa.func.count()).select_from(deliveries).where(mine)
        rows = [
            {
                "kind": kind,
                "recipient": recipient,
                "topic": topic,
                "data": data,
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for topic, data in posts
        ]
        with self.engine.begin() as conn:
            # Counted before and after: drivers disagree on rowcount for a skipped insert.
            before = conn.execute(count).scalar_one()
            for row in rows:
                conn.execute(
                    self._insert(deliveries)
                    .values(row)
                    .on_conflict_do_nothing(
                        index_elements=["kind", "recipient", "topic"],
                        index_where=deliveries.c.topic.is_not(None),
                    )
                )
            return int(conn.execute(count).scalar_one() - before)

    def post(self, kind: str, recipient: str, topic: str) -> Mail | None:
        """A chat post by its place in the day; once sent, its message id is the id the
        service gave it (Slack's ``ts``, Discord's message id)."""
        d = deliveries.c
        query = sa.select(*_MAIL_COLUMNS).where(
            d.kind == kind, d.recipient == recipient, d.topic == topic
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _mail(row)

    def post_counts(self, kind: str, recipient: str, prefix: str) -> Counter[str]:
        """How many chat posts to ``recipient`` whose topic begins with ``prefix`` (a day)
        are in each status."""
        d = deliveries.c
        query = (
            sa.select(d.status, sa.func.count())
            .where(d.kind == kind, d.recipient == recipient, d.topic.startswith(prefix))
            .group_by(d.status)
        )
        with self.engine.connect() as conn:
            return Counter({status: int(n) for status, n in conn.execute(query)})

    def next_mail_at(self, *, chat: bool = True) -> dt.datetime | None:
        """When the next queued single mail (or chat post, with ``chat``) is due (None when
        there is none)."""
        d = deliveries.c
        query = sa.select(sa.func.min(d.next_attempt_at)).where(
            d.issue_id.is_(None), d.status.in_(("queued", "sending"))
        )
        if not chat:
            query = query.where(d.kind.not_in(CHAT_KINDS))
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return _aware(value)

    def mail(self, mail_id: int) -> Mail | None:
        """One single mail."""
        query = sa.select(*_MAIL_COLUMNS).where(
            deliveries.c.id == mail_id, deliveries.c.issue_id.is_(None)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _mail(row)

    def mails(self, kind: str | None = None) -> list[Mail]:
        """Single mails, oldest first."""
        query = sa.select(*_MAIL_COLUMNS).where(deliveries.c.issue_id.is_(None))
        if kind is not None:
            query = query.where(deliveries.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(deliveries.c.id)).all()
        return [_mail(r) for r in rows]
