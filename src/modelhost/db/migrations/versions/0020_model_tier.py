"""A model may pick a hardware tier (setting hardware_tiers): the CPUs, memory and GPUs each of
its instances gets.

Revision ID: 0020r
Revises: 0019f
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020r"
down_revision = "0019f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("tier", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("tier")
