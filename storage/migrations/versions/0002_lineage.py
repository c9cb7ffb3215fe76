"""Lineage store: append-only OpenLineage events and the indexes the graph API reads.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lineage_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.String(64), nullable=False, unique=True),
        sa.Column("event_type", sa.String(16), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("job_namespace", sa.String(500), nullable=False),
        sa.Column("job_name", sa.String(1000), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "lineage_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("job_namespace", sa.String(500), nullable=False),
        sa.Column("job_name", sa.String(1000), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_run_id", sa.String(64), nullable=True, index=True),
        sa.Column("parent_job_name", sa.String(1000), nullable=True),
        sa.Column("facets", sa.JSON, nullable=False),
    )
    op.create_table(
        "lineage_io",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("namespace", sa.String(500), nullable=False),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("direction", sa.String(6), nullable=False),
        sa.Column("version", sa.String(200), nullable=True),
        sa.Column("facets", sa.JSON, nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "namespace", "name", "direction", name="uq_lineage_io"),
    )
    op.create_index("ix_lineage_io_dataset", "lineage_io", ["namespace", "name"])


def downgrade() -> None:
    op.drop_index("ix_lineage_io_dataset", "lineage_io")
    for table in ("lineage_io", "lineage_runs", "lineage_events"):
        op.drop_table(table)
