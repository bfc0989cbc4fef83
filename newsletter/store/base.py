"""What every group of queries shares: the engine, errors, the subscriber record."""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from newsletter.errors import NewsletterError

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StoreError(NewsletterError):
    pass


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str
    name: str
    lang: str
    status: str
    bounces: int = 0
    status_reason: str = ""
    status_code: str = ""
    status_detail: str = ""
    status_at: dt.datetime | None = None
    soft_bounces: int = 0
    created_at: dt.datetime | None = None

    @property
    def why(self) -> str:
        """Why the status changed, in one line: reason, code, time and diagnostic."""
        if not self.status_reason:
            return ""
        parts = [self.status_reason]
        if self.status_code:
            parts.append(self.status_code)
        if self.status_at is not None:
            parts.append(self.status_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
        text = " ".join(parts)
        detail = " ".join((self.status_detail or "").split())
        return f"{text}: {detail[:200]}" if detail else text


# Subscriber kinds of report, and the reason each writes on the subscriber.
REPORT_KINDS = ("hard", "soft", "complaint", "unsubscribe", "blocked")


@overload
def _aware(value: dt.datetime) -> dt.datetime: ...
@overload
def _aware(value: dt.datetime | None) -> dt.datetime | None: ...
def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite returns naive datetimes even for timezone=True columns; every value stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _subscriber(row: Any) -> Subscriber:
    return Subscriber(
        row.id,
        row.email,
        row.name,
        row.lang,
        row.status,
        row.bounces,
        row.status_reason or "",
        row.status_code or "",
        row.status_detail or "",
        _aware(row.status_at),
        row.soft_bounces,
        _aware(row.created_at),
    )


def _engine(url: str, base_dir: Path) -> Engine:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:" and not os.path.isabs(path):
            url = f"sqlite:///{base_dir / path}"
    try:
        engine = sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, ImportError, ModuleNotFoundError) as exc:
        raise StoreError(
            f"database_url: cannot use {sa.engine.make_url(url).render_as_string()}: {exc}"
        ) from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)
    return engine


def sqlite_pragmas(dbapi_conn: Any, _record: Any = None) -> None:
    """What every SQLite connection is opened with (the store's, and a sending lane's)."""
    cur = dbapi_conn.cursor()
    # WAL lets readers (the web app) run beside a send; NORMAL keeps every commit
    # safe from a killed process at a fraction of FULL's fsync cost.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class StoreBase:
    """One database: its engine, and what every group of queries needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise StoreError(f"unsupported database: {self.dialect}")
