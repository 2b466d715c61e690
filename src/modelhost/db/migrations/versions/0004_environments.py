"""Isolated environments: each version's lock, interpreter and git source; named environments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("environment_revision", sa.Integer, nullable=True))
        batch.add_column(sa.Column("environment_lock", sa.Text, nullable=True))
        batch.add_column(sa.Column("environment_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("interpreter", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("python_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("source", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("git_commit", sa.String(64), nullable=True))
    op.create_table(
        "environments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, index=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("requirements", sa.Text, nullable=False),
        sa.Column("lock", sa.Text, nullable=False),
        sa.Column("interpreter", sa.String(1024), nullable=False),
        sa.Column("python_version", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", "revision", name="uq_environments_name_revision"),
    )


def downgrade() -> None:
    op.drop_table("environments")
    with op.batch_alter_table("versions") as batch:
        for column in (
            "git_commit",
            "source",
            "python_version",
            "interpreter",
            "environment_hash",
            "environment_lock",
            "environment_revision",
        ):
            batch.drop_column(column)
