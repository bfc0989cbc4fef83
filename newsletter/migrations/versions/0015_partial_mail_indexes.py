"""The indexes of single mails and chat posts hold only their rows.

Revision 0015, after 0014. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

ix_deliveries_kind_recipient (kind, recipient) and uq_deliveries_topic (kind, recipient,
topic) held an entry for every delivery, an issue's too, although an issue's deliveries
have neither a recipient of their own nor a topic. Every change of state of a delivery
wrote a new entry in both: a send marks each row twice. Partial, they hold only the rows
they are asked about (a query on them must say so: an equality on the recipient or the
topic does; an address compared through lower() needs ``recipient IS NOT NULL`` beside
it); what uq_deliveries_topic forbids is unchanged, since rows without a topic never
collided.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_RECIPIENT = sa.text("recipient IS NOT NULL")
_TOPIC = sa.text("topic IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_deliveries_kind_recipient", table_name="deliveries")
    op.create_index(
        "ix_deliveries_kind_recipient",
        "deliveries",
        ["kind", "recipient"],
        postgresql_where=_RECIPIENT,
        sqlite_where=_RECIPIENT,
    )
    op.drop_index("uq_deliveries_topic", table_name="deliveries")
    op.create_index(
        "uq_deliveries_topic",
        "deliveries",
        ["kind", "recipient", "topic"],
        unique=True,
        postgresql_where=_TOPIC,
        sqlite_where=_TOPIC,
    )


def downgrade() -> None:
    op.drop_index("uq_deliveries_topic", table_name="deliveries")
    op.create_index(
        "uq_deliveries_topic", "deliveries", ["kind", "recipient", "topic"], unique=True
    )
    op.drop_index("ix_deliveries_kind_recipient", table_name="deliveries")
    op.create_index("ix_deliveries_kind_recipient", "deliveries", ["kind", "recipient"])
