"""The newest schema, as the queries use it (SQLAlchemy Core tables).

The Alembic revisions in ``newsletter/migrations/versions`` build it step by step and never
import these definitions; a test compares the two.
"""

from __future__ import annotations

import sqlalchemy as sa

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced")
DELIVERY_STATUSES = ("queued", "sending", "sent", "failed", "skipped")
# The transitions between them belong to newsletter.app.issues; the store only records them.
ISSUE_STATUSES = ("draft", "approved", "sending", "paused", "sent", "cancelled")
# What a row of the outbox (the deliveries table) carries: an issue's delivery to a
# subscriber, a single mail built in advance (a confirmation, an editor's copy), or a post
# to a team's chat.
MESSAGE_KINDS = ("issue", "confirm", "test", "slack", "discord")
CHAT_KINDS = ("slack", "discord")

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
    # The console's counts by language, and its pages of one language and state (0013).
    sa.Index("ix_subscribers_lang_status", "lang", "status", "id"),
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
    # Who paused it (operator, outage, breaker): only the sender ends an outage's pause.
    sa.Column("paused_by", sa.String(16)),
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

# The outbox: every outgoing message, one row each, drained by one sender. An issue's
# delivery names its issue and subscriber and is built from the issue's frozen content; a
# single mail (no issue) carries its recipient and its built, unsigned bytes.
# The rows the sender still has to send. A query uses the partial index on them only when
# its own condition is this text, literally: a planner cannot see into bound parameters.
UNSENT = "status IN ('queued', 'sending')"

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id")),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id")),
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
    sa.Column("kind", sa.String(16), nullable=False, server_default="issue"),
    sa.Column("recipient", sa.String(320)),
    sa.Column("data", sa.LargeBinary),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    # A chat post's place in its day (2024-01-29/paper:2401.12345): queued once (0010).
    sa.Column("topic", sa.String(200)),
    sa.UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
    sa.Index("ix_deliveries_issue_status", "issue_id", "status"),
    # A single mail's or a chat post's rows only: an issue's have no recipient of their
    # own, and no topic (0015).
    sa.Index(
        "ix_deliveries_kind_recipient",
        "kind",
        "recipient",
        postgresql_where=sa.text("recipient IS NOT NULL"),
        sqlite_where=sa.text("recipient IS NOT NULL"),
    ),
    sa.Index(
        "uq_deliveries_topic",
        "kind",
        "recipient",
        "topic",
        unique=True,
        postgresql_where=sa.text("topic IS NOT NULL"),
        sqlite_where=sa.text("topic IS NOT NULL"),
    ),
    # What a claim reads: one lane's unsent rows in id order (revision 0009).
    sa.Index(
        "ix_deliveries_due",
        "issue_id",
        "id",
        postgresql_where=sa.text(UNSENT),
        sqlite_where=sa.text(UNSENT),
    ),
    # A send's pace: its messages handed over in the last minute, and its first (0013).
    sa.Index(
        "ix_deliveries_sent",
        "issue_id",
        "sent_at",
        postgresql_where=sa.text("sent_at IS NOT NULL"),
        sqlite_where=sa.text("sent_at IS NOT NULL"),
    ),
    # What came back for an issue's deliveries: the few rows a report marked (0013).
    sa.Index(
        "ix_deliveries_bounced",
        "issue_id",
        "bounce_kind",
        postgresql_where=sa.text("bounce_kind IS NOT NULL"),
        sqlite_where=sa.text("bounce_kind IS NOT NULL"),
    ),
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

# A report by mail (a bounce, a complaint, a mailed unsubscribe) that proved no delivery of
# ours (no valid token, no Message-ID we sent): it acted on nobody, whatever addresses it
# named (anyone can write them), and its message waits in the mailbox's unmatched folder.
unmatched_reports = sa.Table(
    "unmatched_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("report_id", sa.String(300), nullable=False),
    # hard, soft, complaint, unsubscribe, blocked
    sa.Column("kind", sa.String(16), nullable=False),
    # The addresses it named, comma-separated.
    sa.Column("addresses", sa.Text, nullable=False, server_default=""),
    sa.Column("diagnostic", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("report_id", name="uq_unmatched_reports_report_id"),
)

# A subscription request from the form (see newsletter.web.subscription): its link is signed
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


# The editor's console: accounts (argon2id hashes, never the password) and their sessions.
# A session is stored under the SHA-256 of its cookie, so a copy of the database signs no
# one in; it ends at ``expires_at`` or when idle too long (``seen_at``), and with its account.
admins = sa.Table(
    "admins",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("username", name="uq_admins_username"),
)

admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "admin_id", sa.Integer, sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_admin_sessions_admin_id", "admin_id"),
)


# The two writes of every message, built once: building and cache-keying a statement
# costs SQLAlchemy more than SQLite takes to run it (about 0.5 ms of 0.85 per message).
