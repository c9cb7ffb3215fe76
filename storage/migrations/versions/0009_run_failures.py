"""Failure causes: why a task of a run failed (stage, task, exception type and message, and
the record, field, file or source where the raising code knew them).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(200), nullable=False, index=True),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("try_number", sa.Integer, nullable=False, server_default="1"),
        sa.Column("will_retry", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("stage", sa.String(50), nullable=True),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("record_id", sa.String(250), nullable=True),
        sa.Column("field", sa.String(250), nullable=True),
        sa.Column("file", sa.Text, nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dataset", "run_id", "task_id", "map_index",
                            name="uq_run_failures_task"),
    )


def downgrade() -> None:
    op.drop_table("run_failures")
