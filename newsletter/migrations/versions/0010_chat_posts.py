"""Chat posts in the outbox: each post's place in its day, so that a post is queued once.

Revision 0010, after 0009. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

- deliveries.topic: what a row is within its channel, for rows that must exist once
  (a chat post: ``2024-01-29/day``, ``2024-01-29/paper:2401.12345``); NULL for the rest.
- uq_deliveries_topic: one row per (kind, recipient, topic), so that queuing a day's posts
  again adds nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("topic", sa.String(200)))
    op.create_index(
        "uq_deliveries_topic", "deliveries", ["kind", "recipient", "topic"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_deliveries_topic", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("topic")
