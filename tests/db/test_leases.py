"""One server per database: the lease, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from modelhost import errors
from modelhost.db import leases
from modelhost.db.engine import make_engine, migrate

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)
FIRST = leases.Holder("box-a", 100, "/srv/modelhost-a", "http://a:8000")
SECOND = leases.Holder("box-b", 200, "/srv/modelhost-b", "http://b:8000")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    migrate(made)
    yield made
    made.dispose()


def test_a_second_server_is_refused_while_the_first_is_alive_naming_it(engine: Engine) -> None:
    leases.claim(engine, FIRST, now=T0)
    with pytest.raises(errors.Conflict) as refused:
        leases.claim(engine, SECOND, now=T0 + dt.timedelta(seconds=3))
    assert "pid 100 on box-a" in refused.value.message
    assert "http://a:8000" in refused.value.message
    assert "database_url" in refused.value.message


def test_a_renewed_lease_keeps_holding_past_the_first_expiry(engine: Engine) -> None:
    leases.claim(engine, FIRST, now=T0)
    assert leases.renew(engine, FIRST, now=T0 + dt.timedelta(seconds=15))
    with pytest.raises(errors.Conflict):
        leases.claim(engine, SECOND, now=T0 + dt.timedelta(seconds=30))


def test_a_lease_not_renewed_for_twenty_seconds_is_taken_over(engine: Engine) -> None:
    leases.claim(engine, FIRST, now=T0)
    leases.claim(engine, SECOND, now=T0 + dt.timedelta(seconds=21))
    assert not leases.renew(engine, FIRST)  # the first learns it lost the lease
    with pytest.raises(errors.Conflict, match="box-b"):
        leases.claim(engine, FIRST, now=T0 + dt.timedelta(seconds=22))


def test_a_restart_on_the_same_machine_and_data_directory_takes_its_lease_at_once(
    engine: Engine,
) -> None:
    leases.claim(engine, FIRST, now=T0)
    restarted = leases.Holder("box-a", 101, "/srv/modelhost-a", "http://a:8000")
    leases.claim(engine, restarted, now=T0 + dt.timedelta(seconds=1))  # after a kill -9
    assert leases.renew(engine, restarted)


def test_a_released_lease_lets_the_next_server_start_at_once(engine: Engine) -> None:
    leases.claim(engine, FIRST, now=T0)
    leases.release(engine, FIRST)
    leases.claim(engine, SECOND, now=T0 + dt.timedelta(seconds=1))
    assert leases.renew(engine, SECOND)
