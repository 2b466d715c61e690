"""A version keeps its function's signature as JSON Schema (for its OpenAPI document), and named
environments can be R libraries, which R versions record the directory of.

Revision ID: 0017o
Revises: 0015l
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017o"
down_revision = "0015l"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("signature_schema", sa.Text, nullable=True))
        batch.add_column(sa.Column("r_library", sa.String(1024), nullable=True))
    with op.batch_alter_table("environments") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="python")
        )
        batch.add_column(sa.Column("r_library", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("r_library")
        batch.drop_column("kind")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("r_library")
        batch.drop_column("signature_schema")
