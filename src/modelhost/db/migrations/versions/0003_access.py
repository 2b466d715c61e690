"""Passwords, key expiry, visibility, invocation mode, access tokens, collaborators, audit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(256), nullable=True))
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("visibility", sa.String(16), nullable=False,
                                   server_default="private"))
        batch.add_column(sa.Column("invocation_mode", sa.String(16), nullable=False,
                                   server_default="token"))
    op.create_table(
        "model_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), nullable=False,
                  index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "collaborators",
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("actor_id", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False, index=True),
        sa.Column("model_id", sa.String(32), nullable=True, index=True),
        sa.Column("model", sa.String(64), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("collaborators")
    op.drop_table("model_tokens")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("invocation_mode")
        batch.drop_column("visibility")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("password_hash")
