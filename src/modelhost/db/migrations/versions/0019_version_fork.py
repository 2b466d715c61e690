"""A version says whether its instances are forked from a process that imported its script
once (the default), or each start fresh, for libraries that do not survive a fork.

Revision ID: 0019f
Revises: 0017o
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019f"
down_revision = "0017o"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(
            sa.Column("fork", sa.Boolean, nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("fork")
