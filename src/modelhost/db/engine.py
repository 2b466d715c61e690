"""Creating the engine and bringing the schema up to date with Alembic."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from modelhost import errors

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
#: the newest migration's revision (``tests/db/test_engine.py`` holds it to Alembic's head).
#: A database already at it needs nothing, and a start that finds so never imports Alembic,
#: about a third of a second of a server's start.
HEAD = "0020r"
_EXAMPLES = "sqlite:////path/modelhost.db or postgresql+psycopg://USER@HOST/DB"


#: how long connecting to PostgreSQL may take before the call answers 503 (not hang)
CONNECT_TIMEOUT_SECONDS = 2


def make_engine(url: str, *, sqlite_synchronous: str = "full") -> Engine:
    """An engine for ``url``; InvalidSetting for a URL SQLAlchemy cannot use."""
    try:
        return _make_engine(url, sqlite_synchronous)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise errors.InvalidSetting(
            f"Setting 'database_url' is not a database URL modelhost can use ({exc}); give "
            f"one such as {_EXAMPLES}."
        ) from None
    except ImportError as exc:  # the driver of a known database is not installed
        raise errors.InvalidSetting(
            f"Setting 'database_url' needs a database driver that is not installed ({exc}); "
            "for PostgreSQL install the postgres extra: pip install 'modelhost[postgres]'."
        ) from None


def _make_engine(url: str, synchronous: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and foreign keys so it behaves like a server DB,
    and ``synchronous`` (full: a commit is on disk before it returns); PostgreSQL gets a
    connect timeout and a liveness check of pooled connections, so it heals after an outage."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cursor.close()

        return engine
    parsed = make_url(url)
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Apply every migration not yet applied (idempotent); Unavailable, naming the database
    (without its password), if it cannot be reached."""
    try:
        if not at_head(engine):
            from alembic import command

            command.upgrade(alembic_config(engine), "head")
            logger.info(
                "Database %s: schema brought to revision %s",
                engine.url.render_as_string(hide_password=True),
                HEAD,
            )
    except OperationalError as exc:  # cannot connect or open it (errors in SQL are others)
        why = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
        raise errors.Unavailable(
            f"Cannot use the database at {engine.url.render_as_string(hide_password=True)} "
            f"({why}); check that it runs and that the setting database_url is right."
        ) from None


def at_head(engine: Engine) -> bool:
    """Whether the database's schema is at :data:`HEAD` already (a new database is not)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return [row[0] for row in versions] == [HEAD]
