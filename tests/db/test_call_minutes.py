"""The per-minute call aggregates on SQLite and on the real PostgreSQL server: what is added to
a stored minute adds up, reads start at a minute, and pruning removes the old ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelhost.db.engine import make_engine, migrate
from modelhost.db.repo import CallMinute, Repo


@pytest.fixture
def repo(database_url: str) -> Iterator[Repo]:
    engine = make_engine(database_url)
    migrate(engine)
    yield Repo(engine)
    engine.dispose()


def _minute(minute: int, requests: int, **values: object) -> CallMinute:
    return CallMinute(
        model_id="m1",
        version_id="v1",
        version_number=1,
        minute=minute,
        requests=requests,
        **values,  # type: ignore[arg-type]
    )


def test_calls_added_to_a_stored_minute_add_up(repo: Repo) -> None:
    repo.add_call_minutes(
        [_minute(100, 3, errors=1, latency_sum_ms=6.0, latency_max_ms=4.0, buckets={5: 3})]
    )
    repo.add_call_minutes(
        [
            _minute(
                100,
                2,
                client_errors=2,
                latency_sum_ms=1.0,
                latency_max_ms=0.5,
                buckets={5: 1, 9: 1},
            ),
            _minute(101, 1, latency_sum_ms=2.0, latency_max_ms=2.0, buckets={7: 1}),
        ]
    )
    [first, second] = repo.list_call_minutes("m1", since=0)
    assert (first.minute, first.requests, first.errors, first.client_errors) == (100, 5, 1, 2)
    assert (first.latency_sum_ms, first.latency_max_ms) == (7.0, 4.0)
    assert first.buckets == {5: 4, 9: 1}
    assert (second.minute, second.requests, second.buckets) == (101, 1, {7: 1})
    assert [m.minute for m in repo.list_call_minutes("m1", since=101)] == [101]
    assert repo.list_call_minutes("other-model", since=0) == []


def test_pruning_removes_the_minutes_before_a_minute_and_deleting_a_model_its_minutes(
    repo: Repo,
) -> None:
    repo.add_call_minutes([_minute(minute, 1) for minute in (10, 20, 30)])
    assert repo.prune_call_minutes(before=20) == 1
    assert [m.minute for m in repo.list_call_minutes("m1", since=0)] == [20, 30]
    repo.delete_model("m1")
    assert repo.list_call_minutes("m1", since=0) == []
