"""The engine's connection settings: SQLite's durability (PRAGMA synchronous: 2 is FULL and
1 is NORMAL, in SQLite's documentation) and PostgreSQL's connect timeout."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from modelhost import errors
from modelhost.db.engine import make_engine
from modelhost.settings import load_settings


def _synchronous(url: str, **kwargs: str) -> int:
    engine = make_engine(url, **kwargs)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("PRAGMA synchronous")).scalar_one())
    finally:
        engine.dispose()


def test_sqlite_writes_each_commit_to_disk_before_answering_by_default(tmp_path: Path) -> None:
    assert load_settings({}, environ={}).sqlite_synchronous == "full"
    assert _synchronous(f"sqlite:///{tmp_path}/a.db") == 2


def test_sqlite_synchronous_normal_is_the_faster_opt_in(tmp_path: Path) -> None:
    settings = load_settings({}, environ={"MODELHOST_SQLITE_SYNCHRONOUS": "normal"})
    url = f"sqlite:///{tmp_path}/a.db"
    assert _synchronous(url, sqlite_synchronous=settings.sqlite_synchronous) == 1


def test_an_unknown_synchronous_mode_is_refused_naming_the_choices() -> None:
    with pytest.raises(errors.InvalidSetting, match="full or normal"):
        load_settings({}, environ={"MODELHOST_SQLITE_SYNCHRONOUS": "off"})


def test_postgresql_connections_time_out_unless_the_url_says_otherwise() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    with engine.connect() as conn:
        timeout = conn.connection.dbapi_connection.info.get_parameters().get("connect_timeout")  # type: ignore[union-attr]
    engine.dispose()
    assert timeout == "2"  # a management call answers 503 within 2 s (issue 15)
    own = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres?connect_timeout=9")
    with own.connect() as conn:
        timeout = conn.connection.dbapi_connection.info.get_parameters().get("connect_timeout")  # type: ignore[union-attr]
    own.dispose()
    assert timeout == "9"
