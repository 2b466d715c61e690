"""Asynchronous predictions, and a webhook per model called when one ends.

Revision ID: 0014a
Revises: 0016c
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014a"
down_revision = "0016c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "async_predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(32), nullable=False),
        sa.Column("route", sa.String(80), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("http_status", sa.Integer, nullable=True),
    )
    op.create_index(
        "ix_async_predictions_status_created", "async_predictions", ["status", "created_at"]
    )
    op.create_index("ix_async_predictions_finished", "async_predictions", ["finished_at"])
    op.create_table(
        "model_webhooks",
        sa.Column("model_id", sa.String(32), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_webhooks")
    op.drop_index("ix_async_predictions_finished", "async_predictions")
    op.drop_index("ix_async_predictions_status_created", "async_predictions")
    op.drop_table("async_predictions")
