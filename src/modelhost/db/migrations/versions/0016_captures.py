"""Prediction capture, opted into per model, with the share of calls captured.

Revision ID: 0016c
Revises: 0018b
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016c"
down_revision = "0018b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(
            sa.Column("capture", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("capture_share", sa.Float, nullable=False, server_default="1.0")
        )


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("capture_share")
        batch.drop_column("capture")
