"""Shared fixtures: a real server for the integration tests, and databases for repo tests."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import POSTGRES_URL, Server, running_server, trained_example


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real modelhost server shared by the integration tests (each uses its own models)."""
    with running_server(tmp_path_factory.mktemp("server") / "home") as running:
        yield running


@pytest.fixture(scope="session")
def wine_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wine example, trained once for the whole run: the xdist workers' base directories
    share a parent, and the first worker to get there trains it while the others wait."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    with (root / "example.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return trained_example(root / "example")


def _postgres_database() -> Iterator[str]:
    name = f"modelhost_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL.format(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.format(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the machine's server, dropped afterwards."""
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'modelhost.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server_database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment of a module's server: its default SQLite database, then a fresh
    PostgreSQL one, so the module's tests run on both."""
    if request.param == "sqlite":
        yield {}
    else:
        for url in _postgres_database():
            yield {"MODELHOST_DATABASE_URL": url}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
