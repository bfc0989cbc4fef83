"""Who paused an issue, recorded rather than inferred.

Revision 0007, after 0006. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

- issues.paused_by: operator, outage or breaker. Before, an outage's pause was told from an
  operator's by its resume time alone; paused issues are classified once, the same way:
  a resume time means an outage, a reason naming the circuit breaker means the breaker,
  and any other pause is the operator's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issues") as batch:
        batch.add_column(sa.Column("paused_by", sa.String(16)))
    issues = sa.table(
        "issues",
        sa.column("status", sa.String),
        sa.column("resume_at", sa.DateTime),
        sa.column("paused_reason", sa.Text),
        sa.column("paused_by", sa.String),
    )
    paused = issues.c.status == "paused"
    op.execute(
        issues.update().where(paused, issues.c.resume_at.is_not(None)).values(paused_by="outage")
    )
    op.execute(
        issues.update()
        .where(
            paused,
            issues.c.paused_by.is_(None),
            issues.c.paused_reason.like("circuit breaker%"),
        )
        .values(paused_by="breaker")
    )
    op.execute(
        issues.update().where(paused, issues.c.paused_by.is_(None)).values(paused_by="operator")
    )


def downgrade() -> None:
    with op.batch_alter_table("issues") as batch:
        batch.drop_column("paused_by")
