"""Incremental collection state per source, staged by a run and committed when it succeeds.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_states",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(200), sa.ForeignKey("datasets.name"), nullable=False,
                  index=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("dataset", "source", "run_id", name="uq_source_states_run"),
    )


def downgrade() -> None:
    op.drop_table("source_states")
