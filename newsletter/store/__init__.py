"""The database: subscribers, issues and the delivery ledger (SQLAlchemy Core).

SQLite by default, PostgreSQL by URL. :class:`Store` gathers the queries, one module per
concept (subscribers, issues, the ledger, reports, single mails, job runs, the writer's
usage, the console's accounts and what it reads); :mod:`.tables` is the newest schema,
which the Alembic revisions in ``newsletter/migrations/versions`` build step by step, and
:func:`open_store` applies the pending ones on first use. :func:`open_monitor` reads what monitoring shows, on an engine
of its own that fails fast.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from newsletter.store.admins import Admin, AdminQueries, AdminSession
from newsletter.store.base import REPORT_KINDS, StoreError, Subscriber, _engine, utcnow
from newsletter.store.claims import Claimed
from newsletter.store.console import (
    ConsoleQueries,
    DeliveryTally,
    ReportRow,
    SendPace,
    UnmatchedReport,
)
from newsletter.store.issues import FrozenContent, Issue, IssueQueries
from newsletter.store.jobs import JobQueries, JobRun
from newsletter.store.ledger import FailedDelivery, LedgerQueries
from newsletter.store.mails import Mail, MailQueries
from newsletter.store.monitor import LatestIssue, Monitor, Tallies, WriterTotals, open_monitor
from newsletter.store.reports import BounceEvent, ReportQueries, Unmatched
from newsletter.store.schema import MIGRATIONS_DIR, SchemaQueries, _alembic_config, head_revision
from newsletter.store.subscribers import (
    Confirmation,
    SubscriberQueries,
    SubscriptionRequest,
)
from newsletter.store.tables import (
    DELIVERY_STATUSES,
    ISSUE_STATUSES,
    MESSAGE_KINDS,
    SUBSCRIBER_STATUSES,
    bounce_events,
    confirmations,
    deliveries,
    issue_contents,
    issues,
    job_runs,
    metadata,
    subscribers,
    summaries,
    unmatched_reports,
    writer_days,
)
from newsletter.store.writer import WriterDay, WriterQueries

__all__ = [
    "DELIVERY_STATUSES",
    "ISSUE_STATUSES",
    "MESSAGE_KINDS",
    "MIGRATIONS_DIR",
    "REPORT_KINDS",
    "SUBSCRIBER_STATUSES",
    "Admin",
    "AdminSession",
    "BounceEvent",
    "Claimed",
    "Confirmation",
    "DeliveryTally",
    "FailedDelivery",
    "FrozenContent",
    "Issue",
    "JobRun",
    "LatestIssue",
    "LazyStore",
    "Mail",
    "Monitor",
    "ReportRow",
    "SendPace",
    "Store",
    "StoreError",
    "Subscriber",
    "SubscriptionRequest",
    "Tallies",
    "Unmatched",
    "UnmatchedReport",
    "WriterDay",
    "WriterTotals",
    "_alembic_config",
    "bounce_events",
    "confirmations",
    "deliveries",
    "head_revision",
    "issue_contents",
    "issues",
    "job_runs",
    "metadata",
    "open_monitor",
    "open_store",
    "subscribers",
    "summaries",
    "unmatched_reports",
    "utcnow",
    "writer_days",
]


class Store(
    SchemaQueries,
    AdminQueries,
    SubscriberQueries,
    IssueQueries,
    LedgerQueries,
    ReportQueries,
    MailQueries,
    JobQueries,
    WriterQueries,
    ConsoleQueries,
):
    """Queries over one database. Every method is one short transaction."""


class LazyStore:
    """A store opened on its first use and closed with :meth:`close`: the web app's pages
    share one, and serving the feeds needs no database. Calling it gives the store."""

    def __init__(self, database_url: str, base_dir: Path = Path(".")) -> None:
        self.database_url = database_url
        self.base_dir = base_dir
        self._store: Store | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Store:
        store = self._store
        if store is None:
            with self._lock:  # pages run in threads: open it once
                if self._store is None:
                    self._store = open_store(self.database_url, self.base_dir)
                store = self._store
        return store

    def close(self) -> None:
        """Close the store, if it was opened (the app is shutting down)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def open_store(database_url: str, base_dir: Path = Path("."), *, migrate: bool = True) -> Store:
    """Connect, and bring the schema up to date unless ``migrate`` is false."""
    store = Store(_engine(database_url, base_dir))
    if migrate:
        try:
            store.migrate()
        except sa.exc.DBAPIError as exc:
            # Unreadable, not a database, corrupt, locked: one line naming the file.
            where = store.engine.url.database or store.engine.url.render_as_string()
            store.close()
            raise StoreError(
                f"database_url: cannot open the database {where}: {exc.orig}"
            ) from None
        except BaseException:
            store.close()
            raise
    return store
