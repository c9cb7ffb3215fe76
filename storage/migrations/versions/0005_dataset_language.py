"""Languages and tags of a dataset, for the catalog's filters.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("language", sa.String(200), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("tags", sa.String(1000), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("tags")
        batch.drop_column("language")
