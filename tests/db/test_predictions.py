"""Asynchronous predictions in the database, on SQLite and on the real PostgreSQL server: a
prediction starts once, a running one left by a dead server fails, ended ones past the retention
are deleted and waiting ones never are, and the queue's depth and age are counted per model."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from modelhost.db.engine import make_engine, migrate
from modelhost.db.predictions import AsyncPrediction
from modelhost.db.repo import Repo


@pytest.fixture
def repo(database_url: str) -> Iterator[Repo]:
    engine = make_engine(database_url)
    migrate(engine)
    yield Repo(engine)
    engine.dispose()


def _add(repo: Repo, model_id: str = "m1") -> AsyncPrediction:
    return repo.add_prediction(
        model_id=model_id,
        route="latest",
        body='{"data": {}}',
        request_id="REQ",
        token_sha256=None,
        user_id=None,
    )


def test_a_prediction_starts_once_fails_if_left_running_and_is_deleted_after_retention(
    repo: Repo,
) -> None:
    # started only once
    prediction = _add(repo)
    assert [p.id for p in repo.queued_predictions(10)] == [prediction.id]
    assert repo.start_prediction(prediction.id) is True
    assert repo.start_prediction(prediction.id) is False
    assert repo.queued_predictions(10) == []
    # left running by a server that died: failed; a queued one stays queued
    queued = _add(repo)
    assert repo.fail_running_predictions('{"code": "interrupted", "message": "m"}') == [
        prediction.id
    ]
    failed = repo.get_prediction(prediction.id)
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", '{"code": "interrupted", "message": "m"}')
    # the ended one goes once past the retention; waiting and running ones never do
    running = _add(repo)
    repo.start_prediction(running.id)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert repo.delete_predictions_before(later - dt.timedelta(hours=2)) == 0
    assert repo.delete_predictions_before(later) == 1
    assert repo.get_prediction(prediction.id) is None
    assert repo.get_prediction(queued.id) is not None
    assert repo.get_prediction(running.id) is not None


def test_queue_depths_ids_and_webhooks(repo: Repo) -> None:
    first = _add(repo, "m1")
    _add(repo, "m1")
    started = _add(repo, "m1")
    _add(repo, "m2")
    repo.start_prediction(started.id)
    depths = {(m, s): (n, oldest) for m, s, n, oldest in repo.queue_depths()}
    assert {key: n for key, (n, _) in depths.items()} == {
        ("m1", "queued"): 2,
        ("m1", "running"): 1,
        ("m2", "queued"): 1,
    }
    assert depths["m1", "queued"][1] == first.created_at  # the oldest waiting one
    ids = {_add(repo).id for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # 128 random bits, hex
    assert repo.get_webhook("m1") is None
    repo.set_webhook("m1", "https://a.example/hook", "secret-1")
    repo.set_webhook("m1", "https://b.example/hook", "secret-2")
    hook = repo.get_webhook("m1")
    assert hook is not None
    assert (hook.url, hook.secret) == ("https://b.example/hook", "secret-2")
    repo.set_webhook("m1", None, None)
    assert repo.get_webhook("m1") is None
