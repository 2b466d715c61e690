"""A failed version says why as data: the kind of failure, its message and the traceback.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("failure_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("failure_message", sa.Text, nullable=True))
        batch.add_column(sa.Column("failure_traceback", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("failure_traceback")
        batch.drop_column("failure_message")
        batch.drop_column("failure_kind")
