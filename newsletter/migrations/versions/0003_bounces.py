"""Bounces, complaints and mailed unsubscribes.

Revision 0003, after 0002. Written out in full: a revision never imports
newsletter.store, whose tables describe only the newest schema.

- subscribers: why the status last changed (``status_reason`` such as hard_bounce or
  complaint, the report's ``status_code`` and ``status_detail``, ``status_at``), and
  ``soft_bounces``, the consecutive issues whose delivery soft-bounced.
- deliveries: what came back after the server's 250 (``bounce_kind``, ``bounce_status``,
  ``bounce_detail``, ``bounced_at``).
- bounce_events: every report acted on, unique per (report, subscriber), so processing a
  mailbox twice changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("status_reason", sa.String(32)))
        batch.add_column(sa.Column("status_code", sa.String(16)))
        batch.add_column(sa.Column("status_detail", sa.Text))
        batch.add_column(sa.Column("status_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("bounce_kind", sa.String(16)))
        batch.add_column(sa.Column("bounce_status", sa.String(16)))
        batch.add_column(sa.Column("bounce_detail", sa.Text))
        batch.add_column(sa.Column("bounced_at", sa.DateTime(timezone=True)))
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("report_id", sa.String(300), nullable=False),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
        sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id")),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status_code", sa.String(16)),
        sa.Column("diagnostic", sa.Text),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("action", sa.String(100), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "report_id", "subscriber_id", name="uq_bounce_events_report_subscriber"
        ),
    )
    op.create_index("ix_bounce_events_delivery_id", "bounce_events", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_bounce_events_delivery_id", table_name="bounce_events")
    op.drop_table("bounce_events")
    with op.batch_alter_table("deliveries") as batch:
        for name in ("bounced_at", "bounce_detail", "bounce_status", "bounce_kind"):
            batch.drop_column(name)
    with op.batch_alter_table("subscribers") as batch:
        for name in ("soft_bounces", "status_at", "status_detail", "status_code", "status_reason"):
            batch.drop_column(name)
