"""The engine's connection settings: SQLite's durability (PRAGMA synchronous: 2 is FULL and
1 is NORMAL, in SQLite's documentation) and PostgreSQL's connect timeout; and migrating, which
leaves Alembic unloaded for a database already at the newest migration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelhost import errors
from modelhost.db.engine import HEAD, alembic_config, at_head, make_engine, migrate
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


def test_head_is_the_newest_migration_alembic_knows() -> None:
    from alembic.script import ScriptDirectory

    config = alembic_config(make_engine("sqlite://"))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]


def test_a_database_at_head_is_opened_without_loading_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'modelhost.db'}"
    script = (
        "import sys; from modelhost.db.engine import make_engine, migrate; "
        "migrate(make_engine(sys.argv[1])); print('alembic' in sys.modules)"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, url], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs == ["True", "False"]  # the new database is migrated, then found at head


def test_a_database_behind_head_is_brought_up_to_it(tmp_path: Path) -> None:
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'modelhost.db'}")
    command.upgrade(alembic_config(engine), "0019f")  # one migration behind 0020r
    assert not at_head(engine)
    migrate(engine)
    assert at_head(engine)
    assert "tier" in {column["name"] for column in sa.inspect(engine).get_columns("models")}
    engine.dispose()
