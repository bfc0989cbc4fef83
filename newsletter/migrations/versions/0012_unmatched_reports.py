"""Reports by mail that name no delivery of ours, kept on record for a person.

Revision 0012, after 0011. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

- unmatched_reports: one row per report (a bounce, a complaint, a mailed unsubscribe)
  that proved no delivery of ours (no valid token, no Message-ID we sent) and so acted on
  nobody; the message itself is moved to the mailbox's unmatched folder. ``newsletter
  status`` counts them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unmatched_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("report_id", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("addresses", sa.Text, nullable=False, server_default=""),
        sa.Column("diagnostic", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("report_id", name="uq_unmatched_reports_report_id"),
    )


def downgrade() -> None:
    op.drop_table("unmatched_reports")
