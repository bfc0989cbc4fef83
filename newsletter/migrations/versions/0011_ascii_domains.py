"""Addresses with an internationalized domain, stored in the form mail servers take.

Revision 0011, after 0010. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

- subscribers.email and email_key: a domain written in other than ASCII (``reader@한국.kr``,
  as CSV imports stored it) becomes its IDNA form (``reader@xn--3e0b707e.kr``), the form
  every address is now stored and sent in; sends to the old form failed. A row whose new
  form another row already has is left as it is. Nothing else changes, so there is no
  downgrade to do.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)


def upgrade() -> None:
    subscribers = sa.table(
        "subscribers",
        sa.column("id", sa.Integer),
        sa.column("email", sa.String),
        sa.column("email_key", sa.String),
    )
    conn = op.get_bind()
    found = conn.execute(sa.select(subscribers.c.id, subscribers.c.email))
    rows = [row for row in found if not str(row.email).isascii()]
    if not rows:
        return
    taken = {str(key) for key in conn.execute(sa.select(subscribers.c.email_key)).scalars()}
    for row in rows:
        try:
            valid = validate_email(row.email, check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError:
            continue  # other characters before the @: left for a person to see
        address = valid.ascii_email or row.email
        if address.lower() in taken:
            log.warning(
                "subscriber %s: %s is already on the list as %s", row.id, row.email, address
            )
            continue
        taken.add(address.lower())
        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == row.id)
            .values(email=address, email_key=address.lower())
        )


def downgrade() -> None:
    pass
