"""The database part of ``modelhost backup`` and ``modelhost restore``
(:mod:`modelhost.backups`): an online copy and putting it back.

SQLite is copied with its online backup API (a consistent snapshot while the server writes),
PostgreSQL with ``pg_dump`` (one transaction, so also consistent while servers write) in its
custom format, and put back with ``pg_restore`` into an empty database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from sqlalchemy import Engine, delete, inspect, select, union
from sqlalchemy.engine import URL

from modelhost import errors
from modelhost.db import tables as t

#: the database's file in a backup, by the kind of database
FILES = {"sqlite": "modelhost.db", "postgresql": "database.pgdump"}


def kind_of(engine: Engine) -> str:
    name = engine.dialect.name
    if name not in FILES:
        raise errors.InvalidSetting(f"Backups support SQLite and PostgreSQL, not {name}.")
    return name


def dump(engine: Engine, destination: Path) -> Path:
    """Write a consistent copy of the database into ``destination`` (a directory); returns
    the file written."""
    kind = kind_of(engine)
    target = destination / FILES[kind]
    if kind == "sqlite":
        source = engine.url.database
        assert source is not None
        with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
            live.backup(copy)  # one step: a consistent snapshot, also while the server writes
        return target
    _run(
        [_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={target}"],
        engine.url,
        "pg_dump",
    )
    return target


def load(engine: Engine, source: Path) -> None:
    """Put the database file ``source`` of a backup back, into an empty database."""
    kind = kind_of(engine)
    if source.name != FILES[kind]:
        theirs = next(k for k, name in FILES.items() if name == source.name)
        raise errors.BadRequest(
            f"The backup holds a {theirs} database and setting database_url names a {kind} "
            f"one; restore into a {theirs} database."
        )
    where = engine.url.render_as_string(hide_password=True)
    if inspect(engine).get_table_names():
        raise errors.Conflict(
            f"The database {where} is not empty; restore into a fresh database (or data "
            "directory) so nothing is mixed or overwritten."
        )
    if kind == "sqlite":
        path = engine.url.database
        assert path is not None
        engine.dispose()
        shutil.copyfile(source, path)
        os.chmod(path, 0o600)
    else:
        _run(
            [
                _tool("pg_restore"),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                str(source),
            ],
            engine.url,
            "pg_restore",
            database_option=True,
        )
    # The servers that held the backed-up database are not this one.
    with engine.begin() as conn:
        conn.execute(delete(t.server_leases))


def referenced_bundles(engine: Engine) -> set[str]:
    """The sha256 of every bundle a version, run or schedule names."""
    query = union(
        select(t.versions.c.bundle_sha256),
        select(t.runs.c.bundle_sha256),
        select(t.schedules.c.bundle_sha256),
    )
    with engine.connect() as conn:
        return {row[0] for row in conn.execute(query)}


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise errors.Unavailable(
            f"{name} is not installed; install the PostgreSQL client tools (the same major "
            "version as the server, or newer) and try again."
        )
    return found


def _run(argv: list[str], url: URL, name: str, *, database_option: bool = False) -> None:
    """Run a PostgreSQL tool on ``url``, its password in the environment (not the command
    line, which other users can see)."""
    plain = url.set(drivername="postgresql", password=None)
    target = plain.render_as_string(hide_password=False)
    env = {**os.environ}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    argv = [*argv[:-1], f"--dbname={target}", argv[-1]] if database_option else [*argv, target]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        said = " ".join(done.stderr.split())[:500]
        raise errors.Unavailable(f"{name} failed ({said}).")
