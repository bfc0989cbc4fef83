"""The database: subscribers, issues and the delivery ledger (SQLAlchemy Core).

SQLite by default, PostgreSQL by URL. The tables below are the newest schema, used by the
queries; the Alembic revisions in ``newsletter/migrations/versions`` build it step by step,
and :func:`open_store` applies the pending ones on first use.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from .errors import NewsletterError

log = logging.getLogger(__name__)

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced")
DELIVERY_STATUSES = ("queued", "sending", "sent", "failed", "skipped")
# The transitions between them belong to newsletter.issues; the store only records them.
ISSUE_STATUSES = ("draft", "approved", "sending", "paused", "sent", "cancelled")
MAIL_STATUSES = ("queued", "sending", "sent", "failed")

metadata = sa.MetaData()

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    # Lower-cased address: uniqueness is case-insensitive whatever the database's collation.
    sa.Column("email_key", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("lang", sa.String(8), nullable=False, server_default="ko"),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("bounces", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("confirmed_at", sa.DateTime(timezone=True)),
    sa.Column("unsubscribed_at", sa.DateTime(timezone=True)),
    # Why the status last changed away from active (hard_bounce, soft_bounces, complaint,
    # unsubscribe_mail, ...), with the report's status code and diagnostic, and when.
    sa.Column("status_reason", sa.String(32)),
    sa.Column("status_code", sa.String(16)),
    sa.Column("status_detail", sa.Text),
    sa.Column("status_at", sa.DateTime(timezone=True)),
    # Consecutive issues whose delivery soft-bounced (a full mailbox, a 4.x.x).
    sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_subscribers_status", "status"),
)

issues = sa.Table(
    "issues",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("week", sa.String(10), nullable=False, unique=True),
    sa.Column("subject", sa.String(300), nullable=False),
    # draft, approved, sending, paused, sent, cancelled
    sa.Column("status", sa.String(16), nullable=False, server_default="draft"),
    sa.Column("recipients", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # What was frozen for sending: a hash of the content, and the settings (JSON) the
    # messages were built with.
    sa.Column("content_hash", sa.String(64)),
    sa.Column("frozen_settings", sa.Text),
    sa.Column("frozen_at", sa.DateTime(timezone=True)),
    sa.Column("approved_at", sa.DateTime(timezone=True)),
    sa.Column("paused_at", sa.DateTime(timezone=True)),
    sa.Column("paused_reason", sa.Text),
    sa.Column("resume_at", sa.DateTime(timezone=True)),
    sa.Column("cancelled_at", sa.DateTime(timezone=True)),
    sa.Index("ix_issues_status", "status"),
)

# The built content of an issue, per language: every worker sends what was approved.
issue_contents = sa.Table(
    "issue_contents",
    metadata,
    sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id"), primary_key=True),
    sa.Column("lang", sa.String(8), primary_key=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("preheader", sa.Text, nullable=False, server_default=""),
    sa.Column("marker", sa.String(100), nullable=False),
    sa.Column("web_url", sa.String(500), nullable=False, server_default=""),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id"), nullable=False),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("message_id", sa.String(300)),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    # Which worker holds the row, and until when: a dead worker's rows come back on expiry.
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # server, recipient, message or policy: an outage must not count as dead addresses.
    sa.Column("error_kind", sa.String(16)),
    sa.Column("smtp_code", sa.Integer),
    sa.Column("enhanced_code", sa.String(16)),
    # What came back later, by mail or webhook: hard, soft, complaint, unsubscribe, blocked.
    sa.Column("bounce_kind", sa.String(16)),
    sa.Column("bounce_status", sa.String(16)),
    sa.Column("bounce_detail", sa.Text),
    sa.Column("bounced_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
    sa.Index("ix_deliveries_issue_status", "issue_id", "status"),
)

# Every report acted on (a bounce, a complaint, a mailed unsubscribe, a webhook event), once:
# the same report (its Message-ID, or a hash of it) for the same subscriber is recorded
# only the first time, which makes processing a mailbox again change nothing.
bounce_events = sa.Table(
    "bounce_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("report_id", sa.String(300), nullable=False),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id")),
    # hard, soft, complaint, unsubscribe, blocked
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status_code", sa.String(16)),
    sa.Column("diagnostic", sa.Text),
    # mailbox or webhook
    sa.Column("source", sa.String(16), nullable=False),
    # What it did to the subscriber, in words.
    sa.Column("action", sa.String(100), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("report_id", "subscriber_id", name="uq_bounce_events_report_subscriber"),
    sa.Index("ix_bounce_events_delivery_id", "delivery_id"),
)

# Single mails outside any issue (confirmations, editor test copies), as built, unsigned
# bytes. status: queued, sending, sent, failed.
outbound = sa.Table(
    "outbound",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("message_id", sa.String(300), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("error_kind", sa.String(16)),
    sa.Column("smtp_code", sa.Integer),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Index("ix_outbound_status_next_attempt_at", "status", "next_attempt_at"),
)


# A subscription request from the form (see newsletter.subscription): its link is signed
# with the nonce and works once; the form's name and language apply only on confirming.
confirmations = sa.Table(
    "confirmations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("nonce", sa.String(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("lang", sa.String(8), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_confirmations_subscriber", "subscriber_id"),
)


# One row per scheduled run of a job (its fire time), so that `newsletter run`, `tick`
# and a restart never run the same fire time twice. status: running, waiting (retry at
# next_try_at), done, skipped, failed.
job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("job", sa.String(40), nullable=False),
    sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(200)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try_at", sa.DateTime(timezone=True)),
    sa.Column("detail", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("job", "fire_time", name="uq_job_runs_job_fire_time"),
)


# What `newsletter write` paid for: each paper's summary under the hash of the prompt that
# asked for it (the model and prompt template included), so a summary is never bought
# twice, across restarts too. body: the model's JSON object, validated.
summaries = sa.Table(
    "summaries",
    metadata,
    sa.Column("arxiv_id", sa.String(40), primary_key=True),
    sa.Column("prompt_hash", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# One row per digest day `newsletter write` worked on: the model's usage that day (tokens
# in and out, from the API's answers, failed answers included) and what the last write
# left (papers written, papers still without a summary).
writer_days = sa.Table(
    "writer_days",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
    sa.Column("papers", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pending", sa.Integer, nullable=False, server_default="0"),
    sa.Column("written_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


# The two writes of every message, built once: building and cache-keying a statement
# costs SQLAlchemy more than SQLite takes to run it (about 0.5 ms of 0.85 per message).
_MARK_SENDING = (
    deliveries.update()
    .where(
        deliveries.c.id == sa.bindparam("b_id"),
        deliveries.c.lease_owner == sa.bindparam("b_owner"),
        deliveries.c.status.in_(("queued", "sending")),
        sa.select(subscribers.c.id)
        .where(subscribers.c.id == deliveries.c.subscriber_id, subscribers.c.status == "active")
        .exists(),
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
_MARK_SENT = (
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

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets readers (the web app) run beside a send; NORMAL keeps every commit
            # safe from a killed process at a fraction of FULL's fsync cost.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


class Store:
    """Queries over one database. Every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise StoreError(f"unsupported database: {self.dialect}")

    # --- schema ---------------------------------------------------------------------

    def schema_version(self) -> str | None:
        """The database's schema revision (``"0002"``), or None when it has no schema yet."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None and sa.inspect(conn).has_table(_RELEASE_0_1_TABLE):
                return _RELEASE_0_1_REVISION
            return current

    def migrate(self) -> list[str]:
        """Apply every pending revision; returns the revisions applied, oldest first.

        A database made by release 0.1 (its own ``schema_migrations`` table and no Alembic
        version) is first stamped as revision 0001, which is its schema.
        """
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with _MIGRATING, self.engine.begin() as conn:
            if self.is_postgres:
                # Two processes starting at once must not both create the tables.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7245001)"))
            elif self.dialect == "sqlite":
                # The same on SQLite: take the write lock before reading the version.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            config = _alembic_config(conn)
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None and sa.inspect(conn).has_table(_RELEASE_0_1_TABLE):
                _check_release_0_1(conn)
                command.stamp(config, _RELEASE_0_1_REVISION)
                current = _RELEASE_0_1_REVISION
            script = ScriptDirectory.from_config(config)
            if current is not None and current not in {r.revision for r in script.walk_revisions()}:
                raise StoreError(
                    f"the database's schema is at revision {current}, which this version of "
                    "newsletter does not know; upgrade newsletter"
                )
            pending = [r.revision for r in script.iterate_revisions("heads", current or "base")]
            pending.reverse()
            if pending:
                command.upgrade(config, "heads")
        for revision in pending:
            log.info("applied schema revision %s", revision)
        return pending

    # --- subscribers ----------------------------------------------------------------

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

    def remove_subscriber(self, email: str) -> bool:
        """Mark unsubscribed (the row stays, so the ledger keeps its history)."""
        found = self.get_subscriber(email=email)
        return bool(found) and self.set_status(found.id, "unsubscribed")  # type: ignore[union-attr]

    def iter_subscribers(
        self, status: str | None = None, batch: int = 1000
    ) -> Iterator[Subscriber]:
        """Stream subscribers in id order, a page at a time (flat memory on long lists)."""
        last = 0
        while True:
            query = (
                sa.select(subscribers)
                .where(subscribers.c.id > last)
                .order_by(subscribers.c.id)
                .limit(batch)
            )
            if status:
                query = query.where(subscribers.c.status == status)
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
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

    def request_confirmation(self, email: str, name: str, lang: str) -> tuple[int, str, str]:
        """Record a request from the form: a new ``pending`` subscriber when the address is
        unknown (a known one is left as it is), and a confirmation row replacing any older
        one of that address. Returns (confirmation id, nonce, the stored address).

        The same statements run whether or not the address is known, so the time taken
        does not tell."""
        now = utcnow()
        key = email.lower()
        nonce = secrets.token_hex(16)
        with self.engine.begin() as conn:
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
            sub = conn.execute(
                sa.select(subscribers.c.id, subscribers.c.email).where(
                    subscribers.c.email_key == key
                )
            ).one()
            conn.execute(confirmations.delete().where(confirmations.c.subscriber_id == sub.id))
            result = conn.execute(
                confirmations.insert().values(
                    subscriber_id=sub.id, nonce=nonce, name=name, lang=lang, created_at=now
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
        return int(pk[0]), nonce, str(sub.email)

    def get_confirmation(self, confirmation_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(confirmations, subscribers.c.email, subscribers.c.status)
                .join(subscribers, subscribers.c.id == confirmations.c.subscriber_id)
                .where(confirmations.c.id == confirmation_id)
            ).first()

    def open_confirmations(self, subscriber_id: int) -> list[Any]:
        """The requests of a subscriber whose links still work (at most one)."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(confirmations).where(confirmations.c.subscriber_id == subscriber_id)
                )
            )

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

    def recent_mails(self, recipient: str, kind: str, since: dt.datetime) -> int:
        """How many mails of ``kind`` were queued for ``recipient`` since ``since``."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(outbound)
                    .where(
                        outbound.c.kind == kind,
                        sa.func.lower(outbound.c.recipient) == recipient.lower(),
                        outbound.c.created_at >= since,
                    )
                ).scalar_one()
            )

    # --- issues ---------------------------------------------------------------------

    def get_issue(self, week: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(issues).where(issues.c.week == week)).first()

    def ensure_issue(self, week: str, subject: str, status: str = "draft") -> Any:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(issues)
                .values(week=week, subject=subject, status=status, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["week"])
            )
            return conn.execute(sa.select(issues).where(issues.c.week == week)).one()

    def set_issue_status(self, issue_id: int, status: str) -> None:
        now = utcnow()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if status == "sent":
            values["finished_at"] = now
        with self.engine.begin() as conn:
            conn.execute(issues.update().where(issues.c.id == issue_id).values(**values))

    def issues_in_status(self, *statuses: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(issues).where(issues.c.status.in_(statuses)).order_by(issues.c.week)
                )
            )

    def get_issue_by_id(self, issue_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(issues).where(issues.c.id == issue_id)).first()

    def list_issues(self) -> list[Any]:
        """Every issue, newest week first."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(issues).order_by(issues.c.week.desc())))

    def latest_issue(self) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(issues).order_by(issues.c.week.desc()).limit(1)).first()

    def all_counts(self) -> dict[int, dict[str, int]]:
        """Delivery counts of every issue, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.issue_id, deliveries.c.status, sa.func.count()).group_by(
                    deliveries.c.issue_id, deliveries.c.status
                )
            ).all()
        found: dict[int, dict[str, int]] = {}
        for issue_id, status, count in rows:
            found.setdefault(issue_id, dict.fromkeys(DELIVERY_STATUSES, 0))[status] = int(count)
        return found

    def transition(
        self, issue_id: int, from_statuses: Iterable[str], to: str, **values: Any
    ) -> bool:
        """Move an issue to ``to`` only if it is in one of ``from_statuses`` now (a compare
        and set: two processes cannot both make the same transition)."""
        if to not in ISSUE_STATUSES:
            raise ValueError(to)
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                issues.update()
                .where(issues.c.id == issue_id, issues.c.status.in_(tuple(from_statuses)))
                .values(status=to, updated_at=now, **values)
            )
        return bool(result.rowcount)

    def reschedule_outage(self, issue_id: int, reason: str, resume_at: dt.datetime) -> bool:
        """A new reason and time for a pause the sender made (one with a resume time)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                issues.update()
                .where(
                    issues.c.id == issue_id,
                    issues.c.status == "paused",
                    issues.c.resume_at.is_not(None),
                )
                .values(paused_reason=reason, resume_at=resume_at, updated_at=utcnow())
            )
        return bool(result.rowcount)

    def end_outage(self, issue_id: int) -> bool:
        """Back to ``sending`` from a pause the sender made; an operator's pause stays."""
        with self.engine.begin() as conn:
            result = conn.execute(
                issues.update()
                .where(
                    issues.c.id == issue_id,
                    issues.c.status == "paused",
                    issues.c.resume_at.is_not(None),
                )
                .values(
                    status="sending",
                    paused_reason=None,
                    paused_at=None,
                    resume_at=None,
                    updated_at=utcnow(),
                )
            )
        return bool(result.rowcount)

    def freeze_issue(
        self,
        issue_id: int,
        contents: Iterable[dict[str, str]],
        settings: str,
        content_hash: str,
        *,
        replace: bool = False,
    ) -> str:
        """Store what every message of the issue will be built from: ``frozen``; ``kept``
        when it is frozen already (another process got there first) and ``replace`` is
        false; ``refused`` once any message of the issue was handed to a server."""
        now = utcnow()
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(
                    sa.select(issues.c.id).where(issues.c.id == issue_id).with_for_update()
                )
            current = conn.execute(
                sa.select(issues.c.content_hash).where(issues.c.id == issue_id)
            ).scalar()
            if current is not None and not replace:
                return "kept"
            handed = conn.execute(_count_in(issue_id, ("sending", "sent"))).scalar_one()
            if handed:
                return "refused"
            conn.execute(issue_contents.delete().where(issue_contents.c.issue_id == issue_id))
            conn.execute(
                issue_contents.insert(), [{"issue_id": issue_id, **row} for row in contents]
            )
            conn.execute(
                issues.update()
                .where(issues.c.id == issue_id)
                .values(
                    content_hash=content_hash,
                    frozen_settings=settings,
                    frozen_at=now,
                    updated_at=now,
                )
            )
        return "frozen"

    def frozen_contents(self, issue_id: int) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(issue_contents)
                    .where(issue_contents.c.issue_id == issue_id)
                    .order_by(issue_contents.c.lang)
                )
            )

    def skip_pending(self, issue_id: int, reason: str) -> int:
        """Queued deliveries of a cancelled issue become ``skipped``; rows on the wire right
        now finish as they are."""
        with self.engine.begin() as conn:
            result = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.issue_id == issue_id,
                    deliveries.c.status == "queued",
                    deliveries.c.lease_owner.is_(None),
                )
                .values(status="skipped", last_error=reason, updated_at=utcnow())
            )
        return int(result.rowcount or 0)

    # --- the ledger -----------------------------------------------------------------

    def fan_out(self, issue_id: int) -> int:
        """One queued delivery per active subscriber, idempotently; returns rows added."""
        now = utcnow()
        select = sa.select(
            sa.literal(issue_id),
            subscribers.c.id,
            sa.literal("queued"),
            sa.literal(0),
            sa.literal(now, sa.DateTime(timezone=True)),
            sa.literal(now, sa.DateTime(timezone=True)),
        ).where(subscribers.c.status == "active")
        stmt = (
            self._insert(deliveries)
            .from_select(
                [
                    "issue_id",
                    "subscriber_id",
                    "status",
                    "attempts",
                    "next_attempt_at",
                    "updated_at",
                ],
                select,
            )
            .on_conflict_do_nothing(index_elements=["issue_id", "subscriber_id"])
        )
        count = (
            sa.select(sa.func.count())
            .select_from(deliveries)
            .where(deliveries.c.issue_id == issue_id)
        )
        with self.engine.begin() as conn:
            # Counted before and after: drivers disagree on rowcount for INSERT ... SELECT.
            before = conn.execute(count).scalar_one()
            conn.execute(stmt)
            total = conn.execute(count).scalar_one()
            conn.execute(
                issues.update()
                .where(issues.c.id == issue_id)
                .values(recipients=total, updated_at=now)
            )
        return int(total - before)

    def claim(
        self,
        issue_id: int,
        owner: str,
        limit: int,
        lease: dt.timedelta,
        now: dt.datetime | None = None,
    ) -> list[Any]:
        """Lease up to ``limit`` deliveries that are due: queued ones whose retry time has
        come, and ``sending`` ones whose holder's lease ran out (it died mid-send).

        On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets any number of workers claim at
        once without blocking or taking the same row.
        """
        now = now or utcnow()
        d = deliveries
        claimable = (
            d.c.issue_id == issue_id,
            # The same rows as (queued, due and free) or (sending and free), written so
            # that the (issue_id, status) index finds them: with the OR of two statuses
            # SQLite scanned every delivery of the issue per claim (27 ms at 100,000).
            d.c.status.in_(("queued", "sending")),
            sa.or_(d.c.lease_until.is_(None), d.c.lease_until < now),
            sa.or_(d.c.status == "sending", d.c.next_attempt_at <= now),
        )
        due = (
            sa.select(d.c.id)
            .where(*claimable)
            .order_by(d.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as conn:
            ids = [row.id for row in conn.execute(due)]
            if not ids:
                return []
            # SQLite has no row locks and reads before it writes: another process may
            # have leased some of these rows since the SELECT. The UPDATE checks again,
            # atomically, and only the rows it leased to ``owner`` are returned.
            conn.execute(
                d.update()
                .where(d.c.id.in_(ids), *claimable)
                .values(lease_owner=owner, lease_until=now + lease)
            )
            rows = conn.execute(
                sa.select(
                    d.c.id,
                    d.c.subscriber_id,
                    d.c.status,
                    d.c.attempts,
                    d.c.message_id,
                    subscribers.c.email,
                    subscribers.c.name,
                    subscribers.c.lang,
                )
                .join(subscribers, subscribers.c.id == d.c.subscriber_id)
                .where(d.c.id.in_(ids), d.c.lease_owner == owner)
                .order_by(d.c.id)
            ).all()
        return list(rows)

    def mark_sending(
        self,
        delivery_id: int,
        owner: str,
        message_id: str,
        *,
        sent: tuple[int, str] | None = None,
        lease: dt.timedelta = dt.timedelta(minutes=5),
    ) -> str:
        """Just before DATA: ``sending`` if the row is still ours and the subscriber still
        active; ``skipped`` when they left meanwhile; ``lost`` when the lease was lost.

        ``sent`` (delivery id, Message-ID) records the worker's previous message as sent
        in the same transaction: it is written in the instant between that message's 250
        and this one's DATA, so it is no later than a commit of its own would be, and
        each message costs one commit instead of two.
        """
        now = utcnow()
        d = deliveries
        with self.engine.begin() as conn:
            if sent is not None:
                conn.execute(_MARK_SENT, {"b_id": sent[0], "b_message_id": sent[1], "b_now": now})
            result = conn.execute(
                _MARK_SENDING,
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
            result = conn.execute(
                d.update()
                .where(
                    d.c.id == delivery_id,
                    d.c.lease_owner == owner,
                    d.c.status.in_(("queued", "sending")),
                )
                .values(
                    status="skipped",
                    last_error="subscriber is no longer active",
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
            )
            return "skipped" if result.rowcount else "lost"

    def mark_sent(self, delivery_id: int, message_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                _MARK_SENT, {"b_id": delivery_id, "b_message_id": message_id, "b_now": utcnow()}
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

    def requeue(self, delivery_ids: Iterable[int], error: str, **detail: Any) -> int:
        """Back to the queue as if never tried: the failure was not the recipient's (the
        server was down, or a policy block paused the issue), so the attempt is given back."""
        ids = list(delivery_ids)
        if not ids:
            return 0
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids), deliveries.c.status.in_(("sending", "failed")))
                .values(
                    status="queued",
                    attempts=sa.case(
                        (deliveries.c.attempts > 0, deliveries.c.attempts - 1), else_=0
                    ),
                    last_error=error[:1000],
                    next_attempt_at=now,
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
        permanent: bool,
        bounce_threshold: int,
        **detail: Any,
    ) -> bool:
        """Record a failure; a permanent one (a bad address) counts toward the
        subscriber's bounces. Returns whether the subscriber became ``bounced``."""
        now = utcnow()
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
                    **detail,
                )
            )
            if not permanent:
                return False
            sub_id = conn.execute(
                sa.select(deliveries.c.subscriber_id).where(deliveries.c.id == delivery_id)
            ).scalar_one()
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == sub_id)
                .values(bounces=subscribers.c.bounces + 1, updated_at=now)
            )
            result = conn.execute(
                subscribers.update()
                .where(
                    subscribers.c.id == sub_id,
                    subscribers.c.bounces >= bounce_threshold,
                    subscribers.c.status == "active",
                )
                .values(
                    status="bounced",
                    updated_at=now,
                    status_reason="refused",
                    status_code=detail.get("enhanced_code") or str(detail.get("smtp_code") or ""),
                    status_detail=error[:1000],
                    status_at=now,
                )
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

    def failures(self, issue_id: int, limit: int = 100) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(subscribers.c.email, deliveries.c.attempts, deliveries.c.last_error)
                    .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                    .where(deliveries.c.issue_id == issue_id, deliveries.c.status == "failed")
                    .order_by(deliveries.c.id)
                    .limit(limit)
                )
            )

    # --- reports: bounces, complaints, mailed unsubscribes ------------------------------

    def delivery_target(self, delivery_id: int) -> tuple[int, int] | None:
        """(delivery id, subscriber id) of a delivery that exists."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(deliveries.c.id, deliveries.c.subscriber_id).where(
                    deliveries.c.id == delivery_id
                )
            ).first()
        return (row.id, row.subscriber_id) if row else None

    def delivery_by_message_id(self, message_id: str) -> tuple[int, int] | None:
        """(delivery id, subscriber id) of the delivery sent with ``message_id`` (``<>``
        included)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(deliveries.c.id, deliveries.c.subscriber_id)
                .where(deliveries.c.message_id == message_id)
                .limit(1)
            ).first()
        return (row.id, row.subscriber_id) if row else None

    def latest_delivery(self, subscriber_id: int) -> int | None:
        """The subscriber's most recent delivery handed to a server."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(sa.func.max(deliveries.c.id)).where(
                    deliveries.c.subscriber_id == subscriber_id,
                    deliveries.c.status.in_(("sent", "failed")),
                )
            ).scalar()
        return int(value) if value is not None else None

    def record_report(
        self,
        *,
        report_id: str,
        source: str,
        kind: str,
        subscriber_id: int,
        delivery_id: int | None,
        status_code: str = "",
        diagnostic: str = "",
        bounce_threshold: int = 3,
    ) -> str | None:
        """Act on one report for one subscriber, in one transaction with its record.

        ``hard``: the subscriber becomes ``bounced``. ``soft``: counted over consecutive
        issues (a delivery in between that did not bounce starts the count again), bounced
        at ``bounce_threshold``. ``complaint``: ``unsubscribed`` (reason ``complaint``),
        whatever the status was. ``unsubscribe``: ``unsubscribed``. ``blocked`` (a policy
        or content refusal) says nothing about the address: only recorded.

        Returns what was done, or None when this report was recorded before: processing
        the same report again changes nothing.
        """
        if kind not in REPORT_KINDS:
            raise ValueError(kind)
        now = utcnow()
        code = (status_code or "")[:16] or None
        detail = (diagnostic or "")[:2000] or None
        with self.engine.begin() as conn:
            if self.is_postgres:
                # Two reports for one subscriber at once: one after the other.
                conn.execute(
                    sa.select(subscribers.c.id)
                    .where(subscribers.c.id == subscriber_id)
                    .with_for_update()
                )
            inserted = conn.execute(
                self._insert(bounce_events)
                .values(
                    report_id=report_id[:300],
                    subscriber_id=subscriber_id,
                    delivery_id=delivery_id,
                    kind=kind,
                    status_code=code,
                    diagnostic=detail,
                    source=source,
                    action="",
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["report_id", "subscriber_id"])
            )
            if not inserted.rowcount:
                return None
            if delivery_id is not None:
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id == delivery_id)
                    .values(
                        bounce_kind=kind,
                        bounce_status=code,
                        bounce_detail=detail,
                        bounced_at=now,
                        updated_at=now,
                    )
                )
            sub = conn.execute(
                sa.select(subscribers).where(subscribers.c.id == subscriber_id)
            ).one()
            why = {
                "status_code": code,
                "status_detail": detail,
                "status_at": now,
                "updated_at": now,
            }
            action = f"recorded ({sub.status})"
            if kind == "hard" and sub.status in ("active", "pending"):
                conn.execute(
                    subscribers.update()
                    .where(subscribers.c.id == subscriber_id)
                    .values(status="bounced", status_reason="hard_bounce", **why)
                )
                action = "bounced"
            elif kind == "soft":
                streak = self._soft_streak(conn, subscriber_id, bounce_threshold)
                values: dict[str, Any] = {"soft_bounces": streak, "updated_at": now}
                action = f"soft bounce {streak} of {bounce_threshold}"
                if streak >= bounce_threshold and sub.status == "active":
                    values.update(status="bounced", status_reason="soft_bounces", **why)
                    action += ": bounced"
                conn.execute(
                    subscribers.update().where(subscribers.c.id == subscriber_id).values(**values)
                )
            elif kind == "complaint":
                # Whatever the status: a complaint must never be mailed again, and the
                # reason stays on record until the address confirms anew.
                conn.execute(
                    subscribers.update()
                    .where(subscribers.c.id == subscriber_id)
                    .values(
                        status="unsubscribed",
                        status_reason="complaint",
                        unsubscribed_at=sub.unsubscribed_at or now,
                        **why,
                    )
                )
                action = "unsubscribed (complaint)"
            elif kind == "unsubscribe" and sub.status in ("active", "pending"):
                conn.execute(
                    subscribers.update()
                    .where(subscribers.c.id == subscriber_id)
                    .values(
                        status="unsubscribed",
                        status_reason="unsubscribe_mail",
                        unsubscribed_at=now,
                        **why,
                    )
                )
                action = "unsubscribed"
            conn.execute(
                bounce_events.update()
                .where(
                    bounce_events.c.report_id == report_id[:300],
                    bounce_events.c.subscriber_id == subscriber_id,
                )
                .values(action=action)
            )
        return action

    @staticmethod
    def _soft_streak(conn: Connection, subscriber_id: int, limit: int) -> int:
        """How many of the subscriber's latest deliveries soft-bounced, one after another."""
        kinds = conn.execute(
            sa.select(deliveries.c.bounce_kind)
            .where(
                deliveries.c.subscriber_id == subscriber_id,
                deliveries.c.status.in_(("sent", "failed")),
            )
            .order_by(deliveries.c.issue_id.desc())
            .limit(max(limit, 1))
        ).scalars()
        streak = 0
        for kind in kinds:
            if kind != "soft":
                break
            streak += 1
        return max(streak, 1)

    def bounce_counts(self, issue_id: int) -> dict[str, int]:
        """An issue's deliveries by what came back: hard, soft, complaint, unsubscribe,
        blocked, and ``refused`` for addresses refused during the SMTP dialogue."""
        d = deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(d.bounce_kind, sa.func.count())
                .where(d.issue_id == issue_id, d.bounce_kind.is_not(None))
                .group_by(d.bounce_kind)
            ).all()
            refused = conn.execute(
                sa.select(sa.func.count()).where(
                    d.issue_id == issue_id,
                    d.status == "failed",
                    d.error_kind == "recipient",
                    d.bounce_kind.is_(None),
                )
            ).scalar_one()
        found = {kind: int(count) for kind, count in rows}
        found["refused"] = int(refused)
        return found

    def reports(self, subscriber_id: int | None = None) -> list[Any]:
        """Recorded reports, oldest first."""
        query = sa.select(bounce_events).order_by(bounce_events.c.id)
        if subscriber_id is not None:
            query = query.where(bounce_events.c.subscriber_id == subscriber_id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def delete_unconfirmed(self, before: dt.datetime) -> tuple[int, int]:
        """Pending subscriptions last asked for before ``before`` and never confirmed: rows
        with no history are deleted; a former subscriber who asked again and never
        confirmed goes back to ``unsubscribed``, keeping the reason on record (a
        complaint stays one). Returns (deleted, set back)."""
        s = subscribers.c
        history = sa.or_(
            sa.select(deliveries.c.id).where(deliveries.c.subscriber_id == s.id).exists(),
            sa.select(bounce_events.c.id).where(bounce_events.c.subscriber_id == s.id).exists(),
        )
        # A request still open (its link has not expired) keeps its subscriber row.
        open_request = (
            sa.select(confirmations.c.id).where(confirmations.c.subscriber_id == s.id).exists()
        )
        stale = (s.status == "pending", s.updated_at < before, ~open_request)
        with self.engine.begin() as conn:
            conn.execute(confirmations.delete().where(confirmations.c.created_at < before))
            deleted = conn.execute(subscribers.delete().where(*stale, ~history)).rowcount
            restored = conn.execute(
                subscribers.update()
                .where(*stale, history)
                .values(status="unsubscribed", updated_at=utcnow())
            ).rowcount
        return int(deleted or 0), int(restored or 0)

    # --- single mails ------------------------------------------------------------------

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

    # --- job runs -------------------------------------------------------------------

    def claim_job_run(
        self,
        job: str,
        fire_time: dt.datetime,
        owner: str,
        now: dt.datetime,
        alive: Callable[[int], bool],
    ) -> bool:
        """Take the run of ``job`` at ``fire_time``: a new one, a ``waiting`` one whose
        retry time has come, or a ``running`` one whose local holder died. False when
        it is done, skipped, or held by a live process."""
        # Always UTC: SQLite keeps the wall time and drops the offset.
        fire_time, now = fire_time.astimezone(dt.UTC), now.astimezone(dt.UTC)
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert(job_runs)
                .values(
                    job=job,
                    fire_time=fire_time,
                    status="running",
                    owner=owner,
                    attempts=1,
                    started_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["job", "fire_time"])
            )
            if inserted.rowcount:
                return True
            row = conn.execute(
                sa.select(job_runs).where(job_runs.c.job == job, job_runs.c.fire_time == fire_time)
            ).one()
            retry_due = row.status == "waiting" and (
                row.next_try_at is None or _aware(row.next_try_at) <= now  # type: ignore[operator]
            )
            orphaned = row.status == "running" and _dead_local_owner(row.owner, alive)
            if not (retry_due or orphaned):
                return False
            taken = conn.execute(
                job_runs.update()
                .where(
                    job_runs.c.id == row.id,
                    job_runs.c.status == row.status,
                    job_runs.c.attempts == row.attempts,
                )
                .values(status="running", owner=owner, attempts=row.attempts + 1, updated_at=now)
            )
            return bool(taken.rowcount)

    def finish_job_run(
        self,
        job: str,
        fire_time: dt.datetime,
        status: str,
        detail: str = "",
        next_try_at: dt.datetime | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                job_runs.update()
                .where(job_runs.c.job == job, job_runs.c.fire_time == fire_time.astimezone(dt.UTC))
                .values(
                    status=status,
                    detail=detail[:1000],
                    next_try_at=next_try_at.astimezone(dt.UTC) if next_try_at else None,
                    owner=None,
                    updated_at=utcnow(),
                )
            )

    def list_job_runs(self, job: str | None = None) -> list[Any]:
        """Recorded runs, oldest fire time first (``fire_time`` and ``next_try_at`` in UTC)."""
        query = sa.select(job_runs).order_by(job_runs.c.fire_time, job_runs.c.job)
        if job is not None:
            query = query.where(job_runs.c.job == job)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    # --- the writer's summaries and usage ----------------------------------------------

    def get_summaries(self, arxiv_ids: Iterable[str], prompt_hash: str) -> dict[str, str]:
        """The cached summary bodies of ``arxiv_ids`` under ``prompt_hash``, by arXiv id."""
        ids = list(arxiv_ids)
        if not ids:
            return {}
        query = sa.select(summaries.c.arxiv_id, summaries.c.body).where(
            summaries.c.prompt_hash == prompt_hash, summaries.c.arxiv_id.in_(ids)
        )
        with self.engine.connect() as conn:
            return {row.arxiv_id: row.body for row in conn.execute(query)}

    def put_summary(
        self,
        arxiv_id: str,
        prompt_hash: str,
        model: str,
        body: str,
        tokens_in: int = 0,
        tokens_out: int = 0,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(summaries)
                .values(
                    arxiv_id=arxiv_id,
                    prompt_hash=prompt_hash,
                    model=model,
                    body=body,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["arxiv_id", "prompt_hash"])
            )

    def _writer_day(self, conn: Connection, day: dt.date) -> None:
        conn.execute(
            self._insert(writer_days)
            .values(day=day, updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=["day"])
        )

    def add_writer_usage(
        self, day: dt.date, *, requests: int, failures: int, tokens_in: int, tokens_out: int
    ) -> None:
        """Add one model call (or several) to ``day``'s usage."""
        with self.engine.begin() as conn:
            self._writer_day(conn, day)
            conn.execute(
                writer_days.update()
                .where(writer_days.c.day == day)
                .values(
                    requests=writer_days.c.requests + requests,
                    failures=writer_days.c.failures + failures,
                    tokens_in=writer_days.c.tokens_in + tokens_in,
                    tokens_out=writer_days.c.tokens_out + tokens_out,
                    updated_at=utcnow(),
                )
            )

    def finish_writer_day(self, day: dt.date, papers: int, pending: int) -> None:
        """Record that ``day``'s digest was written with ``papers`` papers, ``pending`` of
        them still without a summary."""
        now = utcnow()
        with self.engine.begin() as conn:
            self._writer_day(conn, day)
            conn.execute(
                writer_days.update()
                .where(writer_days.c.day == day)
                .values(papers=papers, pending=pending, written_at=now, updated_at=now)
            )

    def writer_day(self, day: dt.date) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(writer_days).where(writer_days.c.day == day)).first()

    def writer_days(self, limit: int = 14) -> list[Any]:
        """The latest ``limit`` days the writer worked on, newest first."""
        query = sa.select(writer_days).order_by(writer_days.c.day.desc()).limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def close(self) -> None:
        self.engine.dispose()


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


def _count_in(issue_id: int, statuses: tuple[str, ...]) -> sa.Select[Any]:
    """How many of an issue's deliveries are in ``statuses``."""
    return (
        sa.select(sa.func.count())
        .select_from(deliveries)
        .where(deliveries.c.issue_id == issue_id, deliveries.c.status.in_(statuses))
    )


def _dead_local_owner(owner: str | None, alive: Callable[[int], bool]) -> bool:
    """Whether ``owner`` (``host:pid:nonce``) names a process of this host that is gone."""
    host, _, rest = (owner or "").partition(":")
    if host != socket.gethostname():
        return False
    try:
        return not alive(int(rest.split(":", 1)[0]))
    except ValueError:
        return False


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Release 0.1 kept its own table of applied migrations; its schema is revision 0001.
_RELEASE_0_1_TABLE = "schema_migrations"
_RELEASE_0_1_REVISION = "0001"
# Alembic keeps the running migration in module globals: one at a time per process.
_MIGRATING = threading.Lock()


def _alembic_config(conn: Connection | None = None) -> Any:
    """Alembic's settings in code (no alembic.ini), running on ``conn`` and its transaction."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    """The newest schema revision this version of newsletter knows."""
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    return str(ScriptDirectory.from_config(config).get_current_head())


def _check_release_0_1(conn: Connection) -> None:
    version = conn.execute(sa.text(f"SELECT max(version) FROM {_RELEASE_0_1_TABLE}")).scalar()
    if version != 2:
        raise StoreError(
            f"the database's schema is at version {version} of a build before release 0.1; "
            "make a new database"
        )


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
