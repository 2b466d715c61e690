"""Several servers on one PostgreSQL database: the leader lock and the change notes, on the
real PostgreSQL server; SQLite's one server always leads."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from modelhost.db import coordination
from modelhost.db.engine import make_engine, migrate
from tests.helpers import wait_until


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    made = make_engine(postgres_url)
    migrate(made)
    yield made
    made.dispose()


class Peer:
    """One server's coordination, counting the changes and leads it hears of."""

    def __init__(self, engine: Engine) -> None:
        self.coordination = coordination.PostgresCoordination(engine)
        self.changes = 0
        self.leads = 0
        self._lock = threading.Lock()

    def start(self) -> Peer:
        self.coordination.start(self._changed, self._led)
        return self

    def _changed(self) -> None:
        with self._lock:
            self.changes += 1

    def _led(self) -> None:
        with self._lock:
            self.leads += 1


def test_the_first_server_leads_and_the_second_follows(engine: Engine) -> None:
    first = Peer(engine).start()
    second = Peer(engine).start()
    try:
        assert first.coordination.leader is True
        assert first.leads == 1
        assert second.coordination.leader is False
        assert second.leads == 0
    finally:
        second.coordination.stop()
        first.coordination.stop()


def test_a_server_is_alone_once_the_others_on_its_database_stopped(
    engine: Engine, postgres_url: str
) -> None:
    first = Peer(engine).start()
    second = Peer(engine).start()
    elsewhere = make_engine(postgres_url.rsplit("/", 1)[0] + "/postgres")
    other_database = Peer(elsewhere).start()  # another installation's server
    try:
        assert first.coordination.alone() is False
        assert second.coordination.alone() is False
        second.coordination.stop()
        wait_until(lambda: first.coordination.alone(), timeout=5, interval=0.05)
    finally:
        other_database.coordination.stop()
        elsewhere.dispose()
        second.coordination.stop()
        first.coordination.stop()
    assert coordination.Solo().alone() is True


def test_when_the_leader_stops_the_follower_leads(engine: Engine) -> None:
    first = Peer(engine).start()
    second = Peer(engine).start()
    try:
        first.coordination.stop()
        wait_until(lambda: second.coordination.leader, timeout=5, interval=0.05)
        assert second.leads == 1
    finally:
        second.coordination.stop()


def test_when_the_leaders_session_is_ended_by_the_database_the_follower_leads(
    engine: Engine,
) -> None:
    # As when the leader's machine goes away: its session ends, and the lock with it.
    first = Peer(engine).start()
    second = Peer(engine).start()
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND objid = :low "
                    # this test's database only: other tests' servers hold the lock in theirs
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                ),
                {"low": coordination.LEADER_LOCK & 0xFFFFFFFF},
            )
        wait_until(lambda: second.coordination.leader, timeout=5, interval=0.05)
        wait_until(lambda: not first.coordination.leader, timeout=5, interval=0.05)
    finally:
        second.coordination.stop()
        first.coordination.stop()


def test_a_change_announced_by_one_server_reaches_the_other_but_not_itself(
    engine: Engine,
) -> None:
    first = Peer(engine).start()
    second = Peer(engine).start()
    try:
        heard_first, heard_second = first.changes, second.changes
        first.coordination.announce()
        wait_until(lambda: second.changes > heard_second, timeout=2, interval=0.02)
        second.coordination.announce()
        wait_until(lambda: first.changes > heard_first, timeout=2, interval=0.02)
        # its own notes are not changes to it: one from the other, none from itself
        assert first.changes == heard_first + 1
    finally:
        second.coordination.stop()
        first.coordination.stop()


def test_servers_starting_together_migrate_one_after_the_other(postgres_url: str) -> None:
    # Processes, as servers are (Alembic's context is one per process): without the lock two
    # would create the same table at once and one would fail.
    script = "import sys; from modelhost.db.engine import make_engine, migrate; " + (
        "migrate(make_engine(sys.argv[1]))"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgres_url], stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    for start in starts:
        _out, err = start.communicate(timeout=120)
        assert start.returncode == 0, err
    made = make_engine(postgres_url)
    try:
        with made.connect() as conn:
            versions = conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one()
        assert versions == 1
    finally:
        made.dispose()


def test_one_server_on_sqlite_always_leads(tmp_path: Path) -> None:
    made = make_engine(f"sqlite:///{tmp_path / 'modelhost.db'}")
    solo = coordination.for_engine(made)
    led: list[bool] = []
    solo.start(lambda: None, lambda: led.append(True))
    assert solo.leader is True
    assert led == [True]
    solo.announce()  # no one to tell: nothing happens, nothing fails
    solo.stop()
    made.dispose()
