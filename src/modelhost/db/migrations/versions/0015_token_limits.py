"""Rates and quotas of access tokens, and each token's quota usage (issue 20).

Revision ID: 0015l
Revises: 0014a
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015l"
down_revision = "0014a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_tokens") as batch:
        batch.add_column(sa.Column("rate_limit", sa.String(32), nullable=True))
        batch.add_column(sa.Column("quota", sa.String(32), nullable=True))
        batch.add_column(
            sa.Column("quota_window", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("quota_used", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("model_tokens") as batch:
        batch.drop_column("quota_used")
        batch.drop_column("quota_window")
        batch.drop_column("quota")
        batch.drop_column("rate_limit")
