"""Single mails outside any issue: confirmations and editor copies."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa

from .base import StoreBase, _aware, utcnow
from .tables import (
    MAIL_STATUSES,
    outbound,
)

log = logging.getLogger(__name__)


class MailQueries(StoreBase):
    def enqueue_mail(self, kind: str, recipient: str, message_id: str, data: bytes) -> int:
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                outbound.insert().values(
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

    def claim_mail(
        self, owner: str, limit: int, lease: dt.timedelta, now: dt.datetime | None = None
    ) -> list[Any]:
        """Lease due single mails, as :meth:`claim` does for an issue's deliveries."""
        now = now or utcnow()
        o = outbound.c
        claimable = (
            o.status.in_(("queued", "sending")),
            sa.or_(o.lease_until.is_(None), o.lease_until < now),
            sa.or_(o.status == "sending", o.next_attempt_at <= now),
        )
        due = (
            sa.select(o.id)
            .where(*claimable)
            .order_by(o.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as conn:
            ids = [row.id for row in conn.execute(due)]
            if not ids:
                return []
            conn.execute(
                outbound.update()
                .where(o.id.in_(ids), *claimable)
                .values(
                    status="sending",
                    attempts=o.attempts + 1,
                    lease_owner=owner,
                    lease_until=now + lease,
                    updated_at=now,
                )
            )
            return list(
                conn.execute(
                    sa.select(outbound).where(o.id.in_(ids), o.lease_owner == owner).order_by(o.id)
                )
            )

    def finish_mail(self, mail_id: int, status: str, **values: Any) -> None:
        """``sent``, ``failed``, or ``queued`` again (with ``next_attempt_at``)."""
        if status not in MAIL_STATUSES:
            raise ValueError(status)
        now = utcnow()
        if status == "sent":
            values.setdefault("sent_at", now)
        if values.get("last_error"):
            values["last_error"] = str(values["last_error"])[:1000]
        with self.engine.begin() as conn:
            conn.execute(
                outbound.update()
                .where(outbound.c.id == mail_id)
                .values(status=status, lease_owner=None, lease_until=None, updated_at=now, **values)
            )

    def next_mail_at(self) -> dt.datetime | None:
        """When the next queued single mail is due (None when there is none)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(sa.func.min(outbound.c.next_attempt_at)).where(
                    outbound.c.status.in_(("queued", "sending"))
                )
            ).scalar()
        return _aware(value)

    def mails(self, kind: str | None = None) -> list[Any]:
        query = sa.select(outbound).order_by(outbound.c.id)
        if kind is not None:
            query = query.where(outbound.c.kind == kind)
        with self.engine.connect() as conn:
            return list(conn.execute(query))
