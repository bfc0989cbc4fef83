"""One outbox: single mails become rows of the delivery ledger.

Revision 0008, after 0007. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

- deliveries: every outgoing message, drained by one sender. ``kind`` says which (``issue``
  for an issue's delivery to a subscriber; ``confirm`` and ``test`` for single mails),
  ``recipient`` and ``data`` hold a single mail's address and built bytes, and a single
  mail has no issue (``issue_id`` is NULL) and may have no subscriber.
- outbound, the separate queue of single mails, is gone: its rows move into deliveries with
  their state, attempts and times.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_MOVED = (
    "kind, recipient, data, message_id, status, attempts, last_error, error_kind, smtp_code, "
    "next_attempt_at, lease_owner, lease_until, created_at, updated_at, sent_at"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite copies the table to change a column's nullability: bounce_events points at
        # it meanwhile, and is checked again when the copy has its name back, at commit.
        op.execute("PRAGMA defer_foreign_keys = ON")
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("issue_id", existing_type=sa.Integer, nullable=True)
        batch.alter_column("subscriber_id", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="issue"))
        batch.add_column(sa.Column("recipient", sa.String(320)))
        batch.add_column(sa.Column("data", sa.LargeBinary))
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True)))
    op.create_index("ix_deliveries_kind_recipient", "deliveries", ["kind", "recipient"])
    op.execute(f"INSERT INTO deliveries ({_MOVED}) SELECT {_MOVED} FROM outbound ORDER BY id")
    op.drop_index("ix_outbound_status_next_attempt_at", table_name="outbound")
    op.drop_table("outbound")


def downgrade() -> None:
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
    op.execute(
        f"INSERT INTO outbound ({_MOVED}) SELECT {_MOVED} FROM deliveries "
        "WHERE issue_id IS NULL ORDER BY id"
    )
    op.execute("DELETE FROM deliveries WHERE issue_id IS NULL")
    op.drop_index("ix_deliveries_kind_recipient", table_name="deliveries")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA defer_foreign_keys = ON")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("created_at")
        batch.drop_column("data")
        batch.drop_column("recipient")
        batch.drop_column("kind")
        batch.alter_column("subscriber_id", existing_type=sa.Integer, nullable=False)
        batch.alter_column("issue_id", existing_type=sa.Integer, nullable=False)
