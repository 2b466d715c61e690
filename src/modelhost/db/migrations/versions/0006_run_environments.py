"""Runs and schedules remember the environment they were asked for.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("runs", "schedules"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("environment", sa.String(128), nullable=True))


def downgrade() -> None:
    for table in ("runs", "schedules"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("environment")
