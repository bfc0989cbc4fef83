"""What a sending lane asks of the ledger for every message: a claim, and the marks around
each message, awaited on the sender's event loop.

On SQLite each is a local write of a few dozen microseconds, made inline. The claims and
marks go over a connection the lane's workers share, the ledger's statements compiled
once and run by the sqlite3 driver itself: SQLAlchemy's work around each statement (a
connection from the pool, a transaction, the cache lookup of the compiled statement) cost
three times the write. Marks asked for together commit together.
On PostgreSQL each is a network round trip: made in a thread, as the ledger's other calls
are, it cost about 2 ms under a send's load (the hand-over to the thread and back, on a
busy machine) against 0.3 ms for the round trip itself. There each worker has a
connection of its own, in psycopg's asyncio mode, and the event loop waits on its socket
beside the SMTP ones. The statements are the ledger's own, compiled once. (One connection
for a lane's workers, with their marks in one statement, was slower: each mark then waited
for the others' round trips.)

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from newsletter.store.base import sqlite_pragmas, utcnow
from newsletter.store.claims import (
    CLAIMED,
    MARK_SENDING,
    MARK_SENT,
    PG_MARK,
    Claimed,
    claim_params,
    claim_statement,
    claimable_rows,
    due_rows,
    lane_of,
    pg_mark_params,
)
from newsletter.store.tables import deliveries

if TYPE_CHECKING:
    from newsletter.store import Store

log = logging.getLogger(__name__)

# How many turns of the event loop the first mark of a group waits for others to join its
# commit. Workers wake one at a time, each on its own server's reply: committed in the
# turn it was asked for, 96% of marks went alone, and their commits were a tenth of the
# loop's time. A few turns gather two to four; on an idle loop they pass in microseconds.
GROUP_TURNS = 4

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

    # Whether the workers of a lane share one (else each worker has its own).
    shared = False

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
    """A worker's ledger calls over its own psycopg connection in asyncio mode, each one
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


@dataclass(frozen=True, slots=True)
class _Positional:
    """A statement as the sqlite3 driver takes it: its SQL with ``?`` placeholders, and how
    to fill them from the values given by name (the rest are the statement's own)."""

    sql: str
    names: tuple[str, ...]
    own: Mapping[str, Any]
    processors: Mapping[str, Callable[[Any], Any] | None]
    # A list parameter's placeholders: (its name, the position in the list) by name.
    items: Mapping[str, tuple[str, int]]

    @classmethod
    def of(
        cls,
        statement: sa.ClauseElement,
        dialect: sa.Dialect,
        given: tuple[str, ...],
        lists: Mapping[str, int] | None = None,
    ) -> _Positional:
        """``given`` names the parameters given at each run; ``lists`` the list ones
        (``expanding``), each with its length, fixed here."""
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        lists = lists or {}
        # Expanded as the engine would (a list of values becomes one placeholder each).
        expanded = compiled.construct_expanded_state(
            {**dict.fromkeys(given), **{name: [None] * size for name, size in lists.items()}}
        )
        processors = {
            name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in given
        }
        items = {
            item: (name, index)
            for name, placeholders in (expanded.parameter_expansion or {}).items()
            if name in lists
            for index, item in enumerate(placeholders)
        }
        return cls(
            expanded.statement,
            tuple(expanded.positiontup or ()),
            expanded.parameters,
            processors,
            items,
        )

    def args(self, values: dict[str, Any]) -> list[Any]:
        out = []
        for name in self.names:
            if name in values:
                process = self.processors[name]
                out.append(values[name] if process is None else process(values[name]))
            elif name in self.items:
                listed, index = self.items[name]
                out.append(values[listed][index])
            else:
                out.append(self.own[name])
        return out


@functools.cache
def _sqlite_claim(
    dialect: sa.Dialect, lane: str, only: bool, limit: int
) -> tuple[_Positional, _Positional, _Positional]:
    """The store's SQLite claim (:meth:`LedgerQueries.claim`) as three statements compiled
    once: the due rows' ids, their lease, and the rows leased. The ids are a list of
    ``limit`` values, padded with ids no row has."""
    d = deliveries
    claimable = claimable_rows(lane, only)
    given = ("b_now", "b_issue", "b_only", "b_limit", "b_owner", "b_until")
    ids: sa.BindParameter[list[int]] = sa.bindparam("b_ids", expanding=True)
    lists = {"b_ids": limit}
    lease = (
        d.update()
        .where(d.c.id.in_(ids), *claimable)
        .values(lease_owner=sa.bindparam("b_owner"), lease_until=sa.bindparam("b_until"))
    )
    leased = CLAIMED.where(d.c.id.in_(ids), d.c.lease_owner == sa.bindparam("b_owner"))
    return (
        _Positional.of(due_rows(claimable), dialect, _present(due_rows(claimable), given)),
        _Positional.of(lease, dialect, _present(lease, given), lists),
        _Positional.of(leased.order_by(d.c.id), dialect, ("b_owner",), lists),
    )


def _present(statement: sa.ClauseElement, names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``names`` that are parameters of ``statement``."""
    compiled = statement.compile()
    assert isinstance(compiled, SQLCompiler)
    return tuple(name for name in names if name in compiled.binds)


@functools.cache
def _sqlite_marks(dialect: sa.Dialect) -> tuple[_Positional, _Positional]:
    return (
        _Positional.of(MARK_SENT, dialect, ("b_id", "b_message_id", "b_now")),
        _Positional.of(
            MARK_SENDING, dialect, ("b_id", "b_owner", "b_message_id", "b_now", "b_until")
        ),
    )


class SqliteLaneLedger(LaneLedger):
    """A lane's claims and marks over its own sqlite3 connection (the same statements,
    the same durability as the store's); the rare cases stay with the store.

    One per lane, shared by its workers: the marks its workers ask for within a few turns
    of the event loop (:data:`GROUP_TURNS`) are committed together (a group commit), each
    still before its message is handed to the server. A commit writes the pages it
    changed to the log, and the marks of neighbouring rows change the same pages: about
    half of a mark's cost was its own commit."""

    shared = True

    def __init__(self, store: Store, conn: Any) -> None:
        super().__init__(store)
        self.conn = conn
        self.dialect = store.engine.dialect
        self.sent, self.sending = _sqlite_marks(self.dialect)
        self._marks: list[tuple[tuple[Any, ...], asyncio.Future[int]]] = []

    @classmethod
    def connect(cls, store: Store) -> SqliteLaneLedger:
        engine = store.engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        conn = engine.dialect.loaded_dbapi.connect(*args, **kwargs)
        sqlite_pragmas(conn)
        return cls(store, conn)

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
        """:meth:`LedgerQueries.claim` on SQLite, over this lane's connection: the rows
        are read, then leased by an UPDATE that checks again that each is claimable
        (another process may have leased it since), and only those leased are returned."""
        pick, take, read = _sqlite_claim(
            self.dialect, lane_of(issue_id, chat), only is not None, limit
        )
        values = claim_params(issue_id, owner, limit, lease, utcnow(), only)
        with self.conn:  # one transaction: committed, or rolled back on an error
            ids: list[int] = [row[0] for row in self.conn.execute(pick.sql, pick.args(values))]
            if not ids:
                return []
            values["b_ids"] = ids + [0] * (limit - len(ids))  # ids start at 1
            self.conn.execute(take.sql, take.args(values))
            rows = self.conn.execute(read.sql, read.args(values)).fetchall()
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
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not self._marks:
            asyncio.get_running_loop().call_soon(self._gather, 1)
        self._marks.append(((delivery_id, owner, message_id, sent, lease), future))
        if await future:
            return "sending"
        # Not marked (the subscriber left, or the lease is gone): rare, and the store
        # finds out which; the previous message's 'sent' is already written.
        return await super().mark_sending(delivery_id, owner, message_id, sent=None, lease=lease)

    def _gather(self, turn: int) -> None:
        """Waits :data:`GROUP_TURNS` turns of the event loop for other workers' marks, then
        commits them all."""
        if turn <= GROUP_TURNS:
            asyncio.get_running_loop().call_soon(self._gather, turn + 1)
        else:
            self._commit_marks()

    def _commit_marks(self) -> None:
        """The marks asked for since the last commit, in one transaction: each mark's
        future gets how many rows it marked sending, or, if the transaction failed (and
        none of it was written), the error."""
        # A mark whose worker has gone (cancelled) is not written: its message will not
        # be sent, and the 'sent' it carried is recorded by that worker on its way out.
        marks = [mark for mark in self._marks if not mark[1].cancelled()]
        self._marks = []
        now = utcnow()
        try:
            with self.conn:  # one transaction: committed, or rolled back on an error
                counts = [self._mark(now, *args) for args, _ in marks]
        except Exception as exc:
            for _, future in marks:
                future.set_exception(exc)
            return
        for (_, future), count in zip(marks, counts, strict=True):
            future.set_result(count)

    def _mark(
        self,
        now: dt.datetime,
        delivery_id: int,
        owner: str,
        message_id: str,
        sent: tuple[int, str] | None,
        lease: dt.timedelta,
    ) -> int:
        if sent is not None:
            self.conn.execute(
                self.sent.sql,
                self.sent.args({"b_id": sent[0], "b_message_id": sent[1], "b_now": now}),
            )
        values = {"b_id": delivery_id, "b_owner": owner, "b_message_id": message_id}
        count: int = self.conn.execute(
            self.sending.sql,
            self.sending.args({**values, "b_now": now, "b_until": now + lease}),
        ).rowcount
        return count

    async def mark_sent(self, delivery_id: int, message_id: str) -> None:
        values = {"b_id": delivery_id, "b_message_id": message_id, "b_now": utcnow()}
        with self.conn:
            self.conn.execute(self.sent.sql, self.sent.args(values))

    async def close(self) -> None:
        self.conn.close()


def _file_database(store: Store) -> bool:
    """Whether the store is an SQLite file, which another connection can open (an
    in-memory database is the one connection's alone)."""
    database = store.engine.url.database or ""
    return (
        store.dialect == "sqlite"
        and database not in ("", ":memory:")
        and ("mode=memory" not in database)
    )


async def lane_ledger(store: Store) -> LaneLedger:
    """The ledger calls of one sending lane, over the fastest path the database has."""
    if store.is_postgres and store.engine.dialect.driver == "psycopg":
        return await PostgresLaneLedger.connect(store)
    if _file_database(store) and store.engine.dialect.driver == "pysqlite":
        return SqliteLaneLedger.connect(store)
    return LaneLedger(store)
