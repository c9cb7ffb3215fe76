"""Quality evaluations per run: candidates (published or blocked by the gate) and the grades
that form each dataset's value curve.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(200), sa.ForeignKey("datasets.name"), nullable=False,
                  index=True),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("grade", sa.String(1), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("report_uri", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dataset", "run_id", name="uq_evaluations_run"),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
