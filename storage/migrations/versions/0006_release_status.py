"""Deprecation and rollback: a version's deprecation, a dataset's pinned "latest", and the
history of both (who, why, when).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("deprecated", sa.JSON, nullable=True))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("latest_version", sa.Integer, nullable=True))
    op.create_table(
        "release_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(200), sa.ForeignKey("datasets.name"), nullable=False,
                  index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("release_events")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("latest_version")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("deprecated")
