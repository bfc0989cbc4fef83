"""Subscribers, and the subscription requests of the form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from newsletter.store.base import StoreBase, Subscriber, _aware, _subscriber, utcnow
from newsletter.store.tables import (
    SUBSCRIBER_STATUSES,
    confirmations,
    deliveries,
    subscribers,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A subscription request from the form, with the address and status of its subscriber
    as they are now. ``name`` and ``lang`` are the form's: they apply only on confirming."""

    id: int
    subscriber_id: int
    nonce: str
    name: str
    lang: str
    created_at: dt.datetime
    email: str
    status: str


_CONFIRMATION = sa.select(confirmations, subscribers.c.email, subscribers.c.status).join(
    subscribers, subscribers.c.id == confirmations.c.subscriber_id
)


def _confirmation(row: sa.Row[Any]) -> Confirmation:
    return Confirmation(
        id=row.id,
        subscriber_id=row.subscriber_id,
        nonce=row.nonce,
        name=row.name,
        lang=row.lang,
        created_at=_aware(row.created_at),
        email=row.email,
        status=row.status,
    )


def _activated(now: dt.datetime) -> dict[str, Any]:
    """A confirmed address is deliverable again: past bounces and reasons no longer count."""
    return {
        "status": "active",
        "confirmed_at": now,
        "bounces": 0,
        "soft_bounces": 0,
        "status_reason": None,
        "status_code": None,
        "status_detail": None,
        "status_at": now,
    }


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """A request recorded by :meth:`SubscriberQueries.request_confirmation`: its
    confirmation row's id and nonce, the address as stored, and its mail's row (0 when
    none was built); ``withheld`` says why that mail is not sent (empty: it is queued)."""

    id: int
    nonce: str
    address: str
    mail_id: int = 0
    withheld: str = ""


def unmailable(status: str, reason: str | None) -> str:
    """Why the form must not mail an address (empty: it may): one that bounced, or whose
    owner reported a mail as spam, gets nothing more from a request anyone can type."""
    if status == "bounced":
        return "not mailed: the address bounced"
    if reason == "complaint":
        return "not mailed: the address complained"
    return ""


def _reached(
    conn: sa.Connection, key: str, limits: Sequence[tuple[dt.timedelta, int]], now: dt.datetime
) -> bool:
    """Whether one of ``limits`` (at most N confirmation mails to ``key`` within a span) is
    reached, counting every confirmation mail recorded, withheld ones too."""
    d = deliveries.c
    # recipient IS NOT NULL: what lets SQLite use ix_deliveries_kind_recipient (partial)
    # although the address is compared through lower().
    mine = sa.and_(d.kind == "confirm", d.recipient.is_not(None), sa.func.lower(d.recipient) == key)
    counts = [
        sa.func.coalesce(sa.func.sum(sa.case((d.created_at >= now - span, 1), else_=0)), 0)
        for span, _ in limits
    ]
    row = conn.execute(sa.select(*counts).where(mine)).one()
    return any(int(found) >= most for found, (_, most) in zip(row, limits, strict=True))


def _record_mail(
    conn: sa.Connection,
    request: SubscriptionRequest,
    mail: Callable[[int, str, str], tuple[str, bytes]],
    why_not: str,
    now: dt.datetime,
) -> SubscriptionRequest:
    """Build the request's mail and record it: queued, or ``skipped`` with ``why_not``."""
    message_id, data = mail(request.id, request.nonce, request.address)
    inserted = conn.execute(
        deliveries.insert().values(
            kind="confirm",
            recipient=request.address,
            message_id=message_id,
            data=data,
            status="skipped" if why_not else "queued",
            last_error=why_not or None,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    ).inserted_primary_key
    assert inserted is not None
    return dataclasses.replace(request, mail_id=int(inserted[0]), withheld=why_not)


def _like(text: str) -> str:
    """A LIKE pattern finding ``text`` anywhere, its own ``%``, ``_`` and ``\\`` literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _ascii_domain(text: str) -> str:
    """``text`` with a non-ASCII domain in the IDNA form addresses are stored in
    (``@한국.kr`` finds ``@xn--3e0b707e.kr``); ``text`` itself when it has none."""
    local, at, domain = text.rpartition("@")
    try:
        return local + at + domain.encode("idna").decode("ascii")
    except UnicodeError:
        return text


def matching(
    dialect: str, *, query: str = "", status: str | None = None, lang: str | None = None
) -> list[sa.ColumnElement[bool]]:
    """The conditions of a search of the list: ``status`` and ``lang`` exactly, and
    ``query`` anywhere in the address or the name, whatever the case (SQLite folds only
    ASCII letters; PostgreSQL every letter)."""
    s = subscribers.c
    found: list[sa.ColumnElement[bool]] = []
    if status:
        found.append(s.status == status)
    if lang:
        found.append(s.lang == lang)
    text = query.strip()
    if text:
        address = _ascii_domain(text.lower()) if not text.isascii() else text.lower()
        # SQLite's LIKE ignores the case of ASCII letters already; lower() there would
        # fold only those too, and miss a name typed with its own capitals (É).
        name = (
            s.name.ilike(_like(text), escape="\\")
            if dialect == "postgresql"
            else s.name.like(_like(text), escape="\\")
        )
        found.append(sa.or_(s.email_key.like(_like(address), escape="\\"), name))
    return found


class SubscriberQueries(StoreBase):
    def add_subscriber(
        self,
        email: str,
        name: str = "",
        lang: str = "ko",
        status: str = "active",
        *,
        merge: bool = True,
    ) -> tuple[Subscriber, bool]:
        """Insert, or merge into the existing row for the same address (any case).

        Returns the subscriber and whether it was new. A merge updates a name or
        language that was given, and never reactivates someone who unsubscribed;
        ``merge=False`` leaves an existing row untouched (a request from the web, where
        anyone can type anyone's address).
        """
        now = utcnow()
        key = email.lower()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(subscribers).where(subscribers.c.email_key == key)).first()
            if row is None:
                stmt = (
                    self._insert(subscribers)
                    .values(
                        email=email,
                        email_key=key,
                        name=name,
                        lang=lang,
                        status=status,
                        created_at=now,
                        updated_at=now,
                        confirmed_at=now if status == "active" else None,
                    )
                    .on_conflict_do_nothing(index_elements=["email_key"])
                )
                if conn.execute(stmt).rowcount:
                    created = conn.execute(
                        sa.select(subscribers).where(subscribers.c.email_key == key)
                    ).one()
                    return _subscriber(created), True
                row = conn.execute(
                    sa.select(subscribers).where(subscribers.c.email_key == key)
                ).one()
            changes: dict[str, Any] = {}
            if not merge:
                return _subscriber(row), False
            if name and name != row.name:
                changes["name"] = name
            if lang and lang != row.lang:
                changes["lang"] = lang
            if changes:
                conn.execute(
                    subscribers.update()
                    .where(subscribers.c.id == row.id)
                    .values(**changes, updated_at=now)
                )
                row = conn.execute(sa.select(subscribers).where(subscribers.c.id == row.id)).one()
            return _subscriber(row), False

    def get_subscriber(
        self, *, id: int | None = None, email: str | None = None
    ) -> Subscriber | None:
        query = sa.select(subscribers)
        if id is not None:
            query = query.where(subscribers.c.id == id)
        elif email is not None:
            query = query.where(subscribers.c.email_key == email.lower())
        else:
            raise ValueError("give id or email")
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _subscriber(row) if row else None

    def set_status(self, subscriber_id: int, status: str, *, reason: str | None = None) -> bool:
        """Change a subscriber's status; ``reason`` (e.g. ``unsubscribe``) is recorded with
        it. Becoming active clears the last reason; pending keeps it (a complaint stays on
        record until the address confirms anew)."""
        if status not in SUBSCRIBER_STATUSES:
            raise ValueError(status)
        now = utcnow()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if status == "unsubscribed":
            values["unsubscribed_at"] = now
        if reason is not None:
            values.update(status_reason=reason, status_code=None, status_detail=None, status_at=now)
        if status == "active":
            values.update(_activated(now))
        with self.engine.begin() as conn:
            result = conn.execute(
                subscribers.update().where(subscribers.c.id == subscriber_id).values(**values)
            )
            if status in ("unsubscribed", "bounced"):
                # A link mailed before leaving must never bring the address back.
                conn.execute(
                    confirmations.delete().where(confirmations.c.subscriber_id == subscriber_id)
                )
        return bool(result.rowcount)

    def set_lang(self, subscriber_id: int, lang: str) -> bool:
        """Change the language a subscriber's mail is written in; False when there is no
        such subscriber. A send under way uses it for every message not yet sent."""
        with self.engine.begin() as conn:
            result = conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(lang=lang, updated_at=utcnow())
            )
        return bool(result.rowcount)

    def remove_subscriber(self, email: str) -> bool:
        """Mark unsubscribed (the row stays, so the ledger keeps its history)."""
        found = self.get_subscriber(email=email)
        return bool(found) and self.set_status(found.id, "unsubscribed")  # type: ignore[union-attr]

    def iter_subscribers(
        self,
        status: str | None = None,
        batch: int = 1000,
        *,
        query: str = "",
        lang: str | None = None,
    ) -> Iterator[Subscriber]:
        """Stream subscribers in id order, a page at a time (flat memory on long lists);
        ``status``, ``lang`` and ``query`` narrow them as :func:`matching` says."""
        last = 0
        where = matching(self.dialect, query=query, status=status, lang=lang)
        while True:
            select = (
                sa.select(subscribers)
                .where(subscribers.c.id > last, *where)
                .order_by(subscribers.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(select).all()
            if not rows:
                return
            for row in rows:
                yield _subscriber(row)
            last = rows[-1].id

    def count_subscribers(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(subscribers.c.status, sa.func.count()).group_by(subscribers.c.status)
            ).all()
        return {status: int(count) for status, count in rows}

    # --- confirmation requests ---------------------------------------------------------

    def request_confirmation(
        self,
        email: str,
        name: str,
        lang: str,
        *,
        limits: Sequence[tuple[dt.timedelta, int]] = (),
        mail: Callable[[int, str, str], tuple[str, bytes]] | None = None,
    ) -> SubscriptionRequest | None:
        """Record a request from the form: a new ``pending`` subscriber when the address is
        unknown (a known one is left as it is), a confirmation row replacing any older one
        of that address and, with ``mail``, its confirmation mail, built by
        ``mail(confirmation id, nonce, stored address)`` as ``(Message-ID, bytes)``.

        All in one transaction that holds the address (the database's write lock on
        SQLite, the subscriber's row on PostgreSQL): of requests for one address arriving
        at once, each sees the mails of those before it. None, and nothing recorded, when
        ``limits`` (each: at most N confirmation mails within a span) are reached.

        The mail of an address that bounced or complained is recorded ``skipped``, never
        sent: anyone can type any address, and the same statements run whether or not
        the address is known, so neither the answer nor the time taken tells."""
        now = utcnow()
        key = email.lower()
        nonce = secrets.token_hex(16)
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            sub = self._hold_address(conn, email, key, lang, now)
            if limits and _reached(conn, key, limits, now):
                return None  # closing without a commit records nothing
            conn.execute(confirmations.delete().where(confirmations.c.subscriber_id == sub.id))
            result = conn.execute(
                confirmations.insert().values(
                    subscriber_id=sub.id, nonce=nonce, name=name, lang=lang, created_at=now
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
            request = SubscriptionRequest(int(pk[0]), nonce, str(sub.email))
            if mail is not None:
                why_not = unmailable(sub.status, sub.status_reason)
                request = _record_mail(conn, request, mail, why_not, now)
            conn.commit()
        return request

    def _hold_address(
        self, conn: sa.Connection, email: str, key: str, lang: str, now: dt.datetime
    ) -> Any:
        """The subscriber of ``key``, made ``pending`` when unknown, and held until the
        transaction ends (on SQLite the write lock already holds everything)."""
        conn.execute(
            self._insert(subscribers)
            .values(
                email=email,
                email_key=key,
                name="",
                lang=lang,
                status="pending",
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["email_key"])
        )
        s = subscribers.c
        return conn.execute(
            sa.select(s.id, s.email, s.status, s.status_reason)
            .where(s.email_key == key)
            .with_for_update()
        ).one()

    def get_confirmation(self, confirmation_id: int) -> Confirmation | None:
        with self.engine.connect() as conn:
            row = conn.execute(_CONFIRMATION.where(confirmations.c.id == confirmation_id)).first()
        return None if row is None else _confirmation(row)

    def open_confirmations(self, subscriber_id: int) -> list[Confirmation]:
        """The requests of a subscriber whose links still work (at most one)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                _CONFIRMATION.where(confirmations.c.subscriber_id == subscriber_id)
            ).all()
        return [_confirmation(row) for row in rows]

    def confirm(self, confirmation_id: int, nonce: str) -> Subscriber | None:
        """Use the request once: the subscriber becomes active with the request's name and
        language. None when it was used, replaced or withdrawn meanwhile."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(confirmations).where(
                    confirmations.c.id == confirmation_id, confirmations.c.nonce == nonce
                )
            ).first()
            if row is None:
                return None
            gone = conn.execute(
                confirmations.delete().where(
                    confirmations.c.id == confirmation_id, confirmations.c.nonce == nonce
                )
            )
            if not gone.rowcount:  # another request used it at the same moment
                return None
            values: dict[str, Any] = {"lang": row.lang, "updated_at": now, **_activated(now)}
            if row.name:
                values["name"] = row.name
            conn.execute(
                subscribers.update().where(subscribers.c.id == row.subscriber_id).values(**values)
            )
            sub = conn.execute(
                sa.select(subscribers).where(subscribers.c.id == row.subscriber_id)
            ).one()
        return _subscriber(sub)
