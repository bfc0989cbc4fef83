"""What a sending lane asks of the ledger for every message: a claim, and the marks around
each message, awaited on the sender's event loop.

On SQLite each is a local write of a few dozen microseconds, made inline. On PostgreSQL
each is a network round trip: made in a thread, as the ledger's other calls are, it cost
about 2 ms under a send's load (the hand-over to the thread and back, on a busy machine)
against 0.3 ms for the round trip itself. There a lane has a connection of its own, in
psycopg's asyncio mode, and the event loop waits on its socket beside the SMTP ones. The
statements are the ledger's own, compiled once.

That connection commits with ``synchronous_commit`` off: a commit returns once it is in
the server's memory, and reaches the disk within a fraction of a second (PostgreSQL's
``wal_writer_delay``), which halves the cost of a mark. It is the promise the SQLite
ledger makes (``synchronous=NORMAL``): a killed sender loses nothing; a crash of the
database server itself may forget the last marks, and then sends those messages again,
never skips one (a mark forgotten leaves its row queued or sending, and both are sent). A
durable commit on any other connection (an issue marked sent, a failure recorded) writes
every earlier mark to disk first, so nothing that depends on a mark outlives it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import sqlalchemy as sa

from newsletter.store.base import utcnow
from newsletter.store.claims import (
    MARK_SENT,
    PG_MARK,
    Claimed,
    claim_params,
    claim_statement,
    lane_of,
    pg_mark_params,
)

if TYPE_CHECKING:
    from newsletter.store import Store

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def worker_id() -> str:
    """Lease owner: host and pid (so a restart can tell a dead local holder) and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def ledger_call(store: Store, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A store call from the sender's event loop: in a thread on PostgreSQL, where each is
    a network round trip the other lanes need not wait for; inline on SQLite, where writers
    in several threads would only wait on its one lock (and its busy handler sleeps)."""
    if store.is_postgres:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


class LaneLedger:
    """A lane's ledger calls, made inline on the store (SQLite, or a PostgreSQL driver
    other than psycopg 3, in a thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await ledger_call(self.store, fn, *args, **kwargs)

    async def claim(
        self,
        issue_id: int | None,
        owner: str,
        limit: int,
        lease: dt.timedelta,
        *,
        only: int | None = None,
        chat: bool = False,
    ) -> list[Claimed]:
        """See :meth:`LedgerQueries.claim`."""
        return await self._call(
            self.store.claim, issue_id, owner, limit, lease, only=only, chat=chat
        )

    async def mark_sending(
        self,
        delivery_id: int,
        owner: str,
        message_id: str,
        *,
        sent: tuple[int, str] | None,
        lease: dt.timedelta,
    ) -> str:
        """See :meth:`LedgerQueries.mark_sending`."""
        return await self._call(
            self.store.mark_sending, delivery_id, owner, message_id, sent=sent, lease=lease
        )

    async def mark_sent(self, delivery_id: int, message_id: str) -> None:
        await self._call(self.store.mark_sent, delivery_id, message_id)

    async def close(self) -> None:
        pass


@functools.cache
def _compiled(statement: sa.ClauseElement, dialect: sa.Dialect) -> tuple[str, dict[str, Any]]:
    """``statement`` as the driver's SQL, and the values of the parameters it was built
    with (the literal values a construct carries become parameters too)."""
    compiled = statement.compile(dialect=dialect)
    return str(compiled), dict(compiled.params)


class PostgresLaneLedger(LaneLedger):
    """A lane's ledger calls over its own psycopg connection in asyncio mode, each one
    statement committed on its own (the same statements the store runs)."""

    def __init__(self, store: Store, conn: Any) -> None:
        super().__init__(store)
        self.conn = conn
        self.dialect = store.engine.dialect

    @classmethod
    async def connect(cls, store: Store) -> PostgresLaneLedger:
        import psycopg

        # SQLAlchemy's own translation of database_url, so the lane connects exactly as
        # the store does (host, port, SSL and the rest).
        args, kwargs = store.engine.dialect.create_connect_args(store.engine.url)
        options = " ".join(filter(None, (kwargs.pop("options", ""), "-c synchronous_commit=off")))
        conn = await psycopg.AsyncConnection.connect(
            *args, **kwargs, autocommit=True, options=options
        )
        return cls(store, conn)

    async def _rows(self, statement: sa.ClauseElement, params: dict[str, Any]) -> list[Any]:
        sql, values = _compiled(statement, self.dialect)
        cursor = await self.conn.execute(sql, {**values, **params})
        return await cursor.fetchall() if cursor.description else []

    async def claim(
        self,
        issue_id: int | None,
        owner: str,
        limit: int,
        lease: dt.timedelta,
        *,
        only: int | None = None,
        chat: bool = False,
    ) -> list[Claimed]:
        rows = await self._rows(
            claim_statement(lane_of(issue_id, chat), only is not None),
            claim_params(issue_id, owner, limit, lease, utcnow(), only),
        )
        return [Claimed(*row) for row in rows]

    async def mark_sending(
        self,
        delivery_id: int,
        owner: str,
        message_id: str,
        *,
        sent: tuple[int, str] | None,
        lease: dt.timedelta,
    ) -> str:
        marked = await self._rows(
            PG_MARK, pg_mark_params(delivery_id, owner, message_id, sent, lease)
        )
        if marked:
            return "sending"
        # Not marked (the subscriber left, or the lease is gone): rare, and the store
        # finds out which; the previous message's 'sent' is already written.
        return await super().mark_sending(delivery_id, owner, message_id, sent=None, lease=lease)

    async def mark_sent(self, delivery_id: int, message_id: str) -> None:
        await self._rows(
            MARK_SENT, {"b_id": delivery_id, "b_message_id": message_id, "b_now": utcnow()}
        )

    async def close(self) -> None:
        await self.conn.close()


async def lane_ledger(store: Store) -> LaneLedger:
    """The ledger calls of one sending lane, over the fastest path the database has."""
    if store.is_postgres and store.engine.dialect.driver == "psycopg":
        return await PostgresLaneLedger.connect(store)
    return LaneLedger(store)
