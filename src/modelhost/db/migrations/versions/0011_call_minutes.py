"""Per-minute call aggregates, so the metrics charts survive a restart.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_minutes",
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("minute", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.String(32), nullable=False),
        sa.Column("version_number", sa.Integer, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("client_errors", sa.Integer, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        sa.Column("latency_max_ms", sa.Float, nullable=False),
        sa.Column("buckets", sa.Text, nullable=False),
    )
    op.create_index("ix_call_minutes_model_minute", "call_minutes", ["model_id", "minute"])
    op.create_index("ix_call_minutes_minute", "call_minutes", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_call_minutes_minute", table_name="call_minutes")
    op.drop_index("ix_call_minutes_model_minute", table_name="call_minutes")
    op.drop_table("call_minutes")
