"""Confirmation requests: single-use, bound to a nonce, carrying the form's name and language.

Revision 0004, after 0003. Written out in full: a revision never imports newsletter.store, whose
tables describe only the newest schema.

- confirmations: one row per subscription request sent from the form. Its link names the
  row and is signed together with the row's nonce, works once, and only while the row
  exists (a newer request or an unsubscribe removes the older rows). The name and
  language typed into the form apply only when the address confirms.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "confirmations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_confirmations_subscriber", "confirmations", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_confirmations_subscriber", table_name="confirmations")
    op.drop_table("confirmations")
