"""Indexes for the editor's console: a send's pace and bounces, the list by language.

Revision 0014, after 0013. Written out in full: a revision never imports
newsletter.store, whose tables describe only the newest schema.

- ix_deliveries_sent: (issue_id, sent_at) of the rows handed to a server. The console
  polls a send's pace every 2 s (messages sent in the last minute, and the first one's
  time); without it each poll read every delivery of the issue from the table.
- ix_deliveries_bounced: (issue_id, bounce_kind) of the rows a report or a refusal
  marked: an issue's bounces and complaints are counted from a handful of entries instead
  of its whole list.
- ix_subscribers_lang_status: (lang, status, id): the list counted by language, and a
  page of one language and state read in id order, from the index alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_SENT = sa.text("sent_at IS NOT NULL")
_BOUNCED = sa.text("bounce_kind IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_sent",
        "deliveries",
        ["issue_id", "sent_at"],
        postgresql_where=_SENT,
        sqlite_where=_SENT,
    )
    op.create_index(
        "ix_deliveries_bounced",
        "deliveries",
        ["issue_id", "bounce_kind"],
        postgresql_where=_BOUNCED,
        sqlite_where=_BOUNCED,
    )
    op.create_index("ix_subscribers_lang_status", "subscribers", ["lang", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_lang_status", table_name="subscribers")
    op.drop_index("ix_deliveries_bounced", table_name="deliveries")
    op.drop_index("ix_deliveries_sent", table_name="deliveries")
