"""What monitoring reads from the database: the outbox, the subscribers, the latest issue
and the writer's usage, each counted by one GROUP BY, and whether the database answers.

A :class:`Monitor` has an engine of its own, made for asking often and failing fast: a
PostgreSQL connection gives up after ``timeout`` (connecting and each statement), and a
SQLite file is opened afresh for every question, read-write but never created, so that a
file whose folder was removed or made unreadable is noticed (a connection kept open would
go on reading the deleted file).
"""

from __future__ import annotations

import logging
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from newsletter.store.base import StoreBase, _engine
from newsletter.store.tables import deliveries, issues, subscribers, writer_days

log = logging.getLogger(__name__)

__all__ = ["LatestIssue", "Monitor", "Tallies", "WriterTotals", "open_monitor"]


@dataclass(frozen=True, slots=True)
class LatestIssue:
    """The newest week's issue: its state, and who paused it (None unless paused)."""

    week: str
    status: str
    paused_by: str | None


@dataclass(frozen=True, slots=True)
class WriterTotals:
    """The writer's usage over every day it worked (failures are part of the requests)."""

    requests: int = 0
    failures: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass(frozen=True, slots=True)
class Tallies:
    """Everything a scrape shows from the database, read on one connection."""

    # Rows of the outbox by (kind, status): issue deliveries and single mails alike.
    messages: dict[tuple[str, str], int]
    subscribers: dict[str, int]
    latest_issue: LatestIssue | None
    writer: WriterTotals


_MESSAGES = sa.select(deliveries.c.kind, deliveries.c.status, sa.func.count()).group_by(
    deliveries.c.kind, deliveries.c.status
)
_SUBSCRIBERS = sa.select(subscribers.c.status, sa.func.count()).group_by(subscribers.c.status)
_LATEST = (
    sa.select(issues.c.week, issues.c.status, issues.c.paused_by)
    .order_by(issues.c.week.desc())
    .limit(1)
)
_WRITER = sa.select(
    *(
        sa.func.coalesce(sa.func.sum(column), 0)
        for column in (
            writer_days.c.requests,
            writer_days.c.failures,
            writer_days.c.tokens_in,
            writer_days.c.tokens_out,
        )
    )
)


class Monitor(StoreBase):
    """Read-only questions for /metrics and /readyz; every method raises what the driver
    raises (:class:`sqlalchemy.exc.SQLAlchemyError`) when the database does not answer."""

    def tallies(self) -> Tallies:
        with self.engine.connect() as conn:
            messages = {(kind, status): n for kind, status, n in conn.execute(_MESSAGES)}
            states = {status: n for status, n in conn.execute(_SUBSCRIBERS)}
            latest = conn.execute(_LATEST).first()
            writer = conn.execute(_WRITER).one()
        return Tallies(
            messages=messages,
            subscribers=states,
            latest_issue=None if latest is None else LatestIssue(*latest),
            writer=WriterTotals(*(int(n) for n in writer)),
        )

    def ping(self) -> None:
        """A question that needs the database itself: SQLite's reads the file's first
        page (a file that is not a database fails), PostgreSQL's is ``SELECT 1``."""
        query = "SELECT count(*) FROM sqlite_master" if self.dialect == "sqlite" else "SELECT 1"
        with self.engine.connect() as conn:
            conn.execute(sa.text(query)).one()

    def close(self) -> None:
        self.engine.dispose()


def open_monitor(database_url: str, base_dir: Path, timeout: float = 2.0) -> Monitor:
    """A :class:`Monitor` of ``database_url``; connects only when asked something."""
    return Monitor(_monitor_engine(database_url, base_dir, timeout))


def _monitor_engine(url: str, base_dir: Path, timeout: float) -> Engine:
    parsed = sa.engine.make_url(url)
    database = parsed.database or ""
    # A file named plainly; a URI filename or driver options are left to the usual engine.
    plain = not database.startswith("file:") and not parsed.query
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and plain:
        path = Path(database) if Path(database).is_absolute() else base_dir / database
        return _sqlite_engine(path.absolute(), timeout)
    if parsed.get_backend_name() == "postgresql":
        seconds = max(1, math.ceil(timeout))  # libpq counts whole seconds
        connect_args = {
            "connect_timeout": seconds,
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        }
        return sa.create_engine(
            parsed,
            connect_args=connect_args,
            pool_pre_ping=True,  # a connection the server ended is noticed, not reused
            pool_size=2,
            max_overflow=2,
        )
    return _engine(url, base_dir)


def _sqlite_engine(path: Path, timeout: float) -> Engine:
    # mode=rw: a missing file is an error, not a new empty database.
    address = f"file:{quote(str(path))}?mode=rw"

    def connect() -> Any:
        return sqlite3.connect(address, uri=True, timeout=timeout, check_same_thread=False)

    return sa.create_engine("sqlite://", creator=connect, poolclass=NullPool)
