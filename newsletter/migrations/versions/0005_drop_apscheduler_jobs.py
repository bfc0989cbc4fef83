"""APScheduler's job table is gone.

Revision 0005, after 0004.

``apscheduler_jobs`` was created by APScheduler's SQLAlchemyJobStore, outside these
migrations, and held pickled jobs that duplicated ``job_runs``. The scheduler now keeps its
jobs in memory and works out what is due from ``job_runs``, so the table only goes stale.
It is dropped when present; a database that never ran ``newsletter run`` has none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("apscheduler_jobs"):
        op.drop_table("apscheduler_jobs")


def downgrade() -> None:
    # Nothing to restore: APScheduler's SQLAlchemyJobStore recreates its table on first use.
    pass
