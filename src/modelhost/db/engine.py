"""Creating the engine and bringing the schema up to date with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from modelhost import errors

MIGRATIONS = Path(__file__).parent / "migrations"
_EXAMPLES = "sqlite:////path/modelhost.db or postgresql+psycopg://USER@HOST/DB"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; InvalidSetting for a URL SQLAlchemy cannot use."""
    try:
        return _make_engine(url)
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


def _make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and foreign keys so it behaves like a server DB."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Apply every migration not yet applied (idempotent); Unavailable, naming the database
    (without its password), if it cannot be reached."""
    try:
        command.upgrade(alembic_config(engine), "head")
    except OperationalError as exc:  # cannot connect or open it (errors in SQL are others)
        why = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
        raise errors.Unavailable(
            f"Cannot use the database at {engine.url.render_as_string(hide_password=True)} "
            f"({why}); check that it runs and that the setting database_url is right."
        ) from None
