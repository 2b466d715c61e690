"""Routing modes, labels, lifecycle state, per-model environment variables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("routing_mode", sa.String(16), nullable=False,
                                   server_default="basic"))
        batch.add_column(sa.Column("state", sa.String(16), nullable=False,
                                   server_default="running"))
        batch.add_column(sa.Column("generation", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("log_requests", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("deployed_version", sa.Integer, nullable=True))
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("desired_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("concurrency", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("health", sa.String(16), nullable=False, server_default="ok"))
        batch.add_column(sa.Column("health_log", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "labels",
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("canary_version", sa.Integer, nullable=True),
        sa.Column("canary_weight", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "env_vars",
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("secret", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("env_vars")
    op.drop_table("labels")
    with op.batch_alter_table("versions") as batch:
        for column in ("health_log", "health", "concurrency", "desired_state"):
            batch.drop_column(column)
    with op.batch_alter_table("models") as batch:
        for column in ("deployed_version", "log_requests", "generation", "state", "routing_mode"):
            batch.drop_column(column)
