"""Alembic environment: runs migrations on the engine modelhost hands it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from modelhost.db.coordination import MIGRATION_LOCK
from modelhost.db.tables import metadata

config = context.config
engine = config.attributes.get("engine") or create_engine(
    str(config.get_main_option("sqlalchemy.url"))
)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several servers may start at once on one database: they migrate in turn, and
            # the later ones find the schema already at head (the lock ends with the commit).
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
    connection.commit()
