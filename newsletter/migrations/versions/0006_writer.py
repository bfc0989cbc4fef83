"""The writer's summary cache and daily usage.

Revision 0006, after 0005. Written out in full: a revision never imports newsletter.store,
whose tables describe only the newest schema.

- summaries: each paper's summary as the model gave it, under the hash of the prompt that
  asked for it, so `newsletter write` never pays twice for one summary.
- writer_days: per digest day, the model's usage (requests, failures, tokens in and out)
  and what the last write left (papers, papers still without a summary).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "summaries",
        sa.Column("arxiv_id", sa.String(40), primary_key=True),
        sa.Column("prompt_hash", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "writer_days",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
        sa.Column("papers", sa.Integer, nullable=False, server_default="0"),
        sa.Column("pending", sa.Integer, nullable=False, server_default="0"),
        sa.Column("written_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("writer_days")
    op.drop_table("summaries")
