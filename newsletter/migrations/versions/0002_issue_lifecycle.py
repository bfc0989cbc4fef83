"""Issue lifecycle, frozen content, outbound queue, typed failures.

Revision 0002, after 0001. Written out in full: a revision never imports
newsletter.store, whose tables describe only the newest schema.

- issues: the times of each lifecycle step (draft, approved, sending, paused, sent,
  cancelled; plain strings in ``status``), and what was frozen for sending: a hash of the
  content and the settings the messages were built with.
- issue_contents: the built subject, HTML and text of an issue per language, so that every
  worker sends what was approved.
- deliveries: what kind of failure (server, recipient, message, policy) and its SMTP codes,
  so that an outage is not mistaken for dead addresses.
- outbound: single mails outside any issue (confirmations, editor test copies), queued as
  built, unsigned bytes.
- schema_migrations, the table of release 0.1's own migrations, is gone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issues") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(64)))
        batch.add_column(sa.Column("frozen_settings", sa.Text))
        batch.add_column(sa.Column("frozen_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("approved_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("paused_reason", sa.Text))
        batch.add_column(sa.Column("resume_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True)))
    op.create_index("ix_issues_status", "issues", ["status"])

    op.create_table(
        "issue_contents",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id"), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("preheader", sa.Text, nullable=False, server_default=""),
        sa.Column("marker", sa.String(100), nullable=False),
        sa.Column("web_url", sa.String(500), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("issue_id", "lang"),
    )

    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(16)))
        batch.add_column(sa.Column("smtp_code", sa.Integer))
        batch.add_column(sa.Column("enhanced_code", sa.String(16)))

    op.create_table(
        "outbound",
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
    )
    op.create_index("ix_outbound_status_next_attempt_at", "outbound", ["status", "next_attempt_at"])

    op.drop_table("schema_migrations")


def downgrade() -> None:
    op.create_table(
        "schema_migrations",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.drop_index("ix_outbound_status_next_attempt_at", table_name="outbound")
    op.drop_table("outbound")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("enhanced_code")
        batch.drop_column("smtp_code")
        batch.drop_column("error_kind")
    op.drop_table("issue_contents")
    op.drop_index("ix_issues_status", table_name="issues")
    with op.batch_alter_table("issues") as batch:
        for name in (
            "cancelled_at",
            "resume_at",
            "paused_reason",
            "paused_at",
            "approved_at",
            "frozen_at",
            "frozen_settings",
            "content_hash",
        ):
            batch.drop_column(name)
