"""The scheduler with a fake clock, on SQLite and on the real PostgreSQL server: when schedules
fire, overlap, missed ticks, pausing, time zones, and runs a crashed server left behind."""

from __future__ import annotations

import datetime as dt
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from modelhost.app import create_app
from modelhost.db.repo import User
from modelhost.jobs.runner import Jobs
from modelhost.jobs.scheduler import _fire, fire_due
from modelhost.operations import Services
from modelhost.operations import schedules as ops
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    services: Services
    clock: Clock
    user: User


@pytest.fixture
def world(database_url: str, tmp_path: object) -> Iterator[World]:
    settings = load_settings(
        {"database_url": database_url},
        environ={"MODELHOST_HOME": str(tmp_path), "MODELHOST_SCHEDULE_MIN_INTERVAL_SECONDS": "1"},
    )
    clock = Clock(at("2026-12-02T12:00"))
    app = create_app(settings, backend=FakeBackend(), clock=clock)
    user = app.services.repo.create_user("alice", is_admin=False)
    yield World(app.services, clock, user)
    app.services.repo.engine.dispose()


def _archive() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
    buffer.seek(0)
    return buffer


def _schedule(world: World, **when: str) -> str:
    schedule = ops.create_schedule(
        world.services, world.user, archive=_archive(), command=["python", "calc.py"], **when
    )
    return schedule.id


def _runs(world: World, schedule_id: str) -> list[tuple[str, dt.datetime]]:
    found = world.services.repo.list_runs(schedule_id=schedule_id)
    return [(r.status, r.created_at) for r in reversed(found)]


def test_a_schedule_fires_once_when_due_and_not_before(world: World) -> None:
    schedule_id = _schedule(world, every="10m")
    assert fire_due(world.services, at("2026-12-02T12:09:59")) == []
    fired = fire_due(world.services, at("2026-12-02T12:10:00"))
    assert [(r.schedule_id, r.status) for r in fired] == [(schedule_id, "queued")]
    assert fire_due(world.services, at("2026-12-02T12:10:01")) == []
    schedule = world.services.repo.get_schedule(schedule_id)
    assert schedule is not None
    assert schedule.next_run_at == at("2026-12-02T12:20")


def test_a_tick_that_finds_the_previous_run_still_going_records_a_skipped_run(
    world: World,
) -> None:
    schedule_id = _schedule(world, every="10m")
    (first,) = fire_due(world.services, at("2026-12-02T12:10"))
    assert world.services.repo.start_run(first.id)  # it is still running at the next tick
    (second,) = fire_due(world.services, at("2026-12-02T12:20"))
    assert second.status == "skipped"
    assert first.id in second.message
    assert "still running" in second.message
    world.services.repo.finish_run(first.id, "succeeded", "done", 0)
    (third,) = fire_due(world.services, at("2026-12-02T12:30"))
    assert third.status == "queued"
    assert [status for status, _ in _runs(world, schedule_id)] == [
        "succeeded",
        "skipped",
        "queued",
    ]


def test_ticks_missed_while_the_server_was_down_fire_once_at_start_up(world: World) -> None:
    schedule_id = _schedule(world, every="10m")
    # The server was down from 12:05 to 13:07: six ticks passed, one run comes out.
    fired = fire_due(world.services, at("2026-12-02T13:07"))
    assert len(fired) == 1
    assert fire_due(world.services, at("2026-12-02T13:08")) == []
    schedule = world.services.repo.get_schedule(schedule_id)
    assert schedule is not None
    assert schedule.next_run_at == at("2026-12-02T13:10")  # the rhythm is kept


def test_two_ticks_that_read_the_same_due_schedule_fire_it_once(world: World) -> None:
    _schedule(world, every="10m")
    now = at("2026-12-02T12:10")
    (stale,) = world.services.repo.due_schedules(now)
    assert _fire(world.services, stale, now) is not None
    assert _fire(world.services, stale, now) is None


def test_a_paused_schedule_does_not_fire_and_resuming_skips_the_paused_ticks(
    world: World,
) -> None:
    schedule_id = _schedule(world, every="10m")
    ops.pause(world.services, world.user, schedule_id)
    assert fire_due(world.services, at("2026-12-02T15:00")) == []
    world.clock.now = at("2026-12-02T15:03")
    resumed = ops.resume(world.services, world.user, schedule_id)
    assert resumed.next_run_at == at("2026-12-02T15:13")
    assert fire_due(world.services, at("2026-12-02T15:12")) == []
    assert len(fire_due(world.services, at("2026-12-02T15:13"))) == 1
    events = [e.action for e in world.services.repo.audit_events()]
    assert {"schedule-create", "schedule-pause", "schedule-resume"} <= set(events)


def test_a_nightly_berlin_schedule_fires_at_two_local_time_across_a_dst_change(
    world: World,
) -> None:
    world.clock.now = at("2026-03-27T12:00")
    schedule_id = _schedule(world, cron="0 2 * * *", timezone="Europe/Berlin")
    for moment in ("2026-03-28T00:59", "2026-03-28T01:00", "2026-03-29T00:59", "2026-03-29T01:00"):
        fire_due(world.services, at(moment))  # the night before (CET), then the change
    for moment in ("2026-03-29T23:59", "2026-03-30T00:00", "2026-03-30T01:00"):
        fire_due(world.services, at(moment))  # the night after (CEST)
    fired = [created for _, created in _runs(world, schedule_id)]
    assert fired == [at("2026-03-28T01:00"), at("2026-03-29T01:00"), at("2026-03-30T00:00")]


def test_runs_a_crashed_server_left_running_fail_and_never_publish_again(world: World) -> None:
    repo = world.services.repo
    values = {
        "owner_id": world.user.id,
        "model_id": None,
        "file": None,
        "function": None,
        "command": '["python", "train.py"]',
        "bundle_sha256": "0" * 64,
        "timeout_seconds": 60.0,
    }
    plain, published = repo.create_run(**values), repo.create_run(**values)
    for run in (plain, published):
        assert repo.start_run(run.id)
    assert repo.record_publish(published.id, "v" * 24, 7)
    assert {r.id for r in Jobs(world.services).recover()} == {plain.id, published.id}
    after = repo.get_run(published.id)
    assert after is not None
    assert after.status == "failed"
    assert "Interrupted" in after.message
    assert "published version 7" in after.message
    assert not repo.record_publish(published.id, "w" * 24, 8)  # a second publish is refused
    assert not repo.finish_run(published.id, "succeeded", "late")  # the outcome stays
