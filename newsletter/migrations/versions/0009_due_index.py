"""An index of the outbox's unsent rows, in the order the sender takes them.

Revision 0009, after 0008. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

- ix_deliveries_due: (issue_id, id) of the rows still queued or sending. A claim asks for
  the first due rows of one lane by id; without it PostgreSQL walked the primary key past
  every row already sent, so each claim cost more as the send went on (1 ms at 5,000 sent,
  growing with the list). The index holds only what is left to send, and shrinks as the
  send goes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_UNSENT = sa.text("status IN ('queued', 'sending')")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["issue_id", "id"],
        postgresql_where=_UNSENT,
        sqlite_where=_UNSENT,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
