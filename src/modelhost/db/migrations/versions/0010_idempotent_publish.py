"""A publish can be retried safely: a version remembers the Idempotency-Key that made it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(128), nullable=True))
        batch.create_unique_constraint(
            "uq_versions_model_idempotency_key", ["model_id", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_constraint("uq_versions_model_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
