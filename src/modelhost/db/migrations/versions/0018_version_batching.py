"""A version can be a batching function, with its largest batch and longest wait.

Its calls leave in batches of at most ``batch_max_size``, waiting at most
``batch_max_wait_ms`` for company while every instance is busy.

Revision ID: 0018b
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018b"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("batch_max_size", sa.Integer, nullable=True))
        batch.add_column(sa.Column("batch_max_wait_ms", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("batch_max_wait_ms")
        batch.drop_column("batch_max_size")
